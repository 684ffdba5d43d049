"""What RQ runs or enqueues: the decisions to retrain (`trigger`), the job entry points (`entry`),
the project locks, the sync with Label Studio, promotion, publishing the queue, and the workers."""
