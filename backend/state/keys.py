"""Every name this backend gives to something in Redis or RQ, and how long each lives.

RQ's `keys.py` habit: modules never spell a key, they call these functions, so the key space can
be read in one place. A project's keys are `lsb:<project>:<name>`; the schedule and the project
numbering of several Label Studio instances are global. Each key's reader and writer is named.
"""

from __future__ import annotations

PREFIX = "lsb"

# -- how long things live -------------------------------------------------------------------------
LOCK_TTL_MS = 15_000  # a project lock lapses this long after its holder's last heartbeat
TRIGGER_LATCH = 600  # seconds before the same serving version may trigger a quality retrain again
QUEUED_FLAG_TIMEOUTS = 4  # a queued-job flag lapses after this many job timeouts
JOB_RESULT_TTL = 3600  # seconds RQ keeps a finished job
JOB_FAILURE_TTL = 7 * 24 * 3600  # seconds RQ keeps a failed job
AUDIT_EVENTS = 10_000  # events kept per project in the audit stream (approximately)
TRAFFIC_KEPT = 2000  # `/predict` traffic samples kept per project for drift
LIVE_WINDOW = 200  # recent live outcomes kept per project
STABILITY_KEPT = 50  # stopping signals kept per project
ACTIVITY_WINDOW = 900  # seconds of annotation events the labeling rate is measured over
POOL_RECONCILE = 3600  # seconds between full listings of a project's tasks in LS

# -- RQ: queues and the functions workers run (stored in every job, so renaming one strands jobs) --
RETRAIN_JOB = "backend.jobs.entry.retrain"
MISLABELS_JOB = "backend.jobs.entry.find_mislabels"
PUBLISH_JOB = "backend.jobs.entry.publish"


def rank_queue(queue_name: str) -> str:
    """The queue of publish jobs (ranking, and pushing the head to LS), worked beside the retrain
    queue `queue_name` so that neither waits for the other."""
    return f"{queue_name}-rank"


PROJECTS = f"{PREFIX}:projects"  # set of every project the backend has heard of


def _project(project: int, name: str) -> str:
    return f"{PREFIX}:{int(project)}:{name}"


# -- annotations and tasks (state.store) ----------------------------------------------------------
def annotations(project: int) -> str:
    """Hash: annotation id -> record (task, author, updated_at)."""
    return _project(project, "ann")


def annotation_labels(project: int) -> str:
    """Hash: annotation id -> labels per control."""
    return _project(project, "ann_labels")


def annotation_times(project: int) -> str:
    """Hash: annotation id -> updated_at, so an older update never wins."""
    return _project(project, "ann_ts")


def tombstones(project: int) -> str:
    """Hash: deleted annotation id -> deletion time, so a late update does not revive it."""
    return _project(project, "tombstones")


def deleted_tasks(project: int) -> str:
    """Set: tasks LS deleted whose annotations the next publish job removes (training skips them now)."""
    return _project(project, "deleted_tasks")


def texts(project: int) -> str:
    """Hash: annotated task id -> the task data training reads."""
    return _project(project, "texts")


def change_seq(project: int) -> str:
    """Counter of label changes (the watermark a model records)."""
    return _project(project, "seq")


def requested_seq(project: int) -> str:
    """The change sequence of the last retrain the label count asked for."""
    return _project(project, "requested_seq")


def meta(project: int) -> str:
    """Hash: label config, Label Studio connection, settings and the LS project id."""
    return _project(project, "meta")


def quarantine(project: int) -> str:
    """Hash: task id -> digest of the example that made training fail."""
    return _project(project, "quarantine")


def pool(project: int) -> str:
    """Hash: unlabeled task id -> data, the pool ranked without Label Studio."""
    return _project(project, "pool")


def predicted(project: int) -> str:
    """Hash: task id -> what the serving version predicted, for live accuracy."""
    return _project(project, "predicted")


def rank_requested(project: int) -> str:
    """Counter of ranking requests; a stored ranking says which it covers."""
    return _project(project, "rank_requested")


def queue(project: int) -> str:
    """The stored ranking's summary (JSON)."""
    return _project(project, "queue")


def queue_order(project: int) -> str:
    """The stored ranking, packed (`state.store.QUEUE_ENTRY` per task)."""
    return _project(project, "queue_order")


def head(project: int) -> str:
    """Hash: the head pushed to LS: `version`, `target` (its size) and `taken` (tasks of it labeled since)."""
    return _project(project, "head")


def head_tasks(project: int) -> str:
    """Set: the tasks holding a prediction of the head's version, pushed by us."""
    return _project(project, "head_tasks")


def activity(project: int) -> str:
    """Sorted set: recent annotation events (member: annotation id) by time, the labeling rate."""
    return _project(project, "activity")


def annotators(project: int) -> str:
    """Sorted set: annotator -> time of their last annotation event."""
    return _project(project, "annotators")


def pool_listed(project: int) -> str:
    """Hash: `after` (the highest LS task id listed) and `full_at` (time of the last full listing)."""
    return _project(project, "pool_listed")


def stability(project: int) -> str:
    """List of stopping signals, newest last."""
    return _project(project, "stability")


def mislabels(project: int) -> str:
    """The last label-error check (JSON)."""
    return _project(project, "mislabels")


def synced_at(project: int) -> str:
    """When annotations were last reconciled with Label Studio."""
    return _project(project, "synced_at")


# -- jobs (jobs.lock, jobs.trigger, jobs.promotion, jobs.publish) --------------------------------------
def train_lock(project: int) -> str:
    """The train job's lock; its value is the holder's job id."""
    return _project(project, "lock")


def publish_lock(project: int) -> str:
    """The publish job's lock (a publish and a training may run at once)."""
    return _project(project, "rank_lock")


def queued_retrain(project: int) -> str:
    """The id of the project's retrain job still waiting to start."""
    return _project(project, "queued")


def queued_publish(project: int) -> str:
    """The id of the project's publish job still waiting to start."""
    return _project(project, "rank_queued")


def last_trained(project: int) -> str:
    """When the project's last train job ended (RETRAIN_MIN_INTERVAL)."""
    return _project(project, "last_trained")


def disputes(project: int) -> str:
    """The disputed (task, control) pairs of the last train job (a set of "task:control"), which
    the next one compares with to audit new disputes and their resolutions."""
    return _project(project, "disputes")


def reviews(project: int) -> str:
    """Disputed tasks LS is asked to have annotated once more (hash: task -> JSON of the overlap
    asked for, the certainty, and the version whose prediction serves it first)."""
    return _project(project, "reviews")


def lost_labels(project: int) -> str:
    """How many labeled tasks the champion saw when Redis was found to have lost labels."""
    return _project(project, "lost_labels")


def pushed_version(project: int) -> str:
    """The model version Label Studio's project was last set to (its `model_version`)."""
    return _project(project, "pushed_version")


def trigger_check(project: int) -> str:
    """Set while a quality check of the project is not due again."""
    return _project(project, "trigger_check")


def triggered(project: int, version: str) -> str:
    """Set while `version` may not trigger another quality retrain (TRIGGER_LATCH)."""
    return _project(project, f"triggered:{version}")


SCHEDULE = f"{PREFIX}:schedule"  # sorted set: project -> next due time of its `retrain_every`
SCHEDULE_SPECS = f"{PREFIX}:schedule_specs"  # hash: project -> the `retrain_every` its due time follows


# -- live measurements (monitor) and the audit trail (state.audit) ----------------------------------
def traffic(project: int) -> str:
    """List of recent `/predict` confidence samples."""
    return _project(project, "traffic")


def live(project: int) -> str:
    """Hash: live-accuracy counters per serving version."""
    return _project(project, "live")


def live_recent(project: int) -> str:
    """List of the recent live outcomes (the rolling window)."""
    return _project(project, "live_recent")


def audit(project: int) -> str:
    """Stream of the project's audit events."""
    return _project(project, "audit")


# -- several Label Studio instances (state.store.resolve_project) -------------------------------------
def instances(ls_project: int) -> str:
    """Hash: creation stamp -> backend project, of the LS projects with id `ls_project`."""
    return f"{PREFIX}:instances:{int(ls_project)}"


EXTRA_PROJECTS = f"{PREFIX}:extra_projects"  # counter of backend numbers given to projects with a taken id

# -- replication (state.connection.replicated) ------------------------------------------------------
REPLICATION_MARK = f"{PREFIX}:replication_mark"  # counter written just before a WAIT, on the waiting connection

# -- erasure (backend.erasure) -----------------------------------------------------------------------
ERASED = f"{PREFIX}:erased"  # hash: project -> how many times it was erased (a job's generation)
ERASURES = f"{PREFIX}:erasures"  # stream: one tombstone per erasure (ids and counts only)
