-- orchestrator's fleet store, schema version 1: one task queue per database.
-- The stack's own text is kept as `json` (not `jsonb`), which keeps keys in their order, so
-- `fleet export` gives back task_stack.json as it went in, unknown fields included.

CREATE TABLE orchestrator.stack (
    -- One row: the stack without its tasks (version, settings, unknown top-level fields).
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    doc        json NOT NULL,
    revision   bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE orchestrator.task (
    id               text PRIMARY KEY,
    -- Order in the stack: selection breaks ties by it, export writes tasks in it.
    position         integer NOT NULL UNIQUE,
    status           text NOT NULL,
    priority         bigint NOT NULL,
    -- The task as task_stack.json holds it, claim and checkpoints included.
    doc              json NOT NULL,
    -- Raised by every claim; a write under an older token is refused (fencing).
    fencing_token    bigint NOT NULL DEFAULT 0,
    lease_session    text,
    lease_expires_at timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX task_open ON orchestrator.task (priority DESC, position) WHERE status IN ('pending', 'in_progress');

CREATE TABLE orchestrator.session (
    id         text PRIMARY KEY,
    task_id    text NOT NULL,
    agent      text NOT NULL,
    host       text NOT NULL,
    -- live | wrapping | archived
    state      text NOT NULL,
    doc        json NOT NULL,
    started_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX session_live ON orchestrator.session (state) WHERE state <> 'archived';

CREATE TABLE orchestrator.event (
    id         bigserial PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    host       text NOT NULL,
    agent      text,
    session_id text,
    task_id    text,
    kind       text NOT NULL,
    detail     json NOT NULL DEFAULT '{}'
);

CREATE TABLE orchestrator.quota_pause (
    account    text PRIMARY KEY,
    until      timestamptz NOT NULL,
    reason     text NOT NULL,
    set_by     text NOT NULL,
    set_at     timestamptz NOT NULL DEFAULT now()
);
