"""Durable state: the Redis key space (`keys`), annotations and queues (`store`), versioned model
artifacts (`registry`), the audit trail, and how to reach Redis (`connection`)."""
