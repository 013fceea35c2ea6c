BEGIN;

CREATE TABLE alembic_version (
    version_num VARCHAR(32) NOT NULL, 
    CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);

-- Running upgrade  -> 25f4b90a7a42

CREATE TABLE flow (
    id UUID DEFAULT (GEN_RANDOM_UUID()) NOT NULL, 
    created TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    updated TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    name VARCHAR NOT NULL, 
    tags JSONB DEFAULT '[]' NOT NULL, 
    CONSTRAINT pk_flow PRIMARY KEY (id), 
    CONSTRAINT uq_flow__name UNIQUE (name)
);

CREATE INDEX ix_flow__updated ON flow (updated);

CREATE TABLE log (
    id UUID DEFAULT (GEN_RANDOM_UUID()) NOT NULL, 
    created TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    updated TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    name VARCHAR NOT NULL, 
    level SMALLINT NOT NULL, 
    flow_run_id UUID NOT NULL, 
    task_run_id UUID, 
    message TEXT NOT NULL, 
    timestamp TIMESTAMP WITH TIME ZONE NOT NULL, 
    CONSTRAINT pk_log PRIMARY KEY (id)
);

CREATE INDEX ix_log__flow_run_id ON log (flow_run_id);

CREATE INDEX ix_log__level ON log (level);

CREATE INDEX ix_log__task_run_id ON log (task_run_id);

CREATE INDEX ix_log__timestamp ON log (timestamp);

CREATE INDEX ix_log__updated ON log (updated);

CREATE TABLE concurrency_limit (
    id UUID DEFAULT (GEN_RANDOM_UUID()) NOT NULL, 
    created TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    updated TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    tag VARCHAR NOT NULL, 
    concurrency_limit INTEGER NOT NULL, 
    active_slots JSONB DEFAULT '[]' NOT NULL, 
    CONSTRAINT pk_concurrency_limit PRIMARY KEY (id)
);

CREATE UNIQUE INDEX ix_concurrency_limit__tag ON concurrency_limit (tag);

CREATE INDEX ix_concurrency_limit__updated ON concurrency_limit (updated);

CREATE TABLE saved_search (
    id UUID DEFAULT (GEN_RANDOM_UUID()) NOT NULL, 
    created TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    updated TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    name VARCHAR NOT NULL, 
    filters JSONB DEFAULT '[]' NOT NULL, 
    CONSTRAINT pk_saved_search PRIMARY KEY (id), 
    CONSTRAINT uq_saved_search__name UNIQUE (name)
);

CREATE INDEX ix_saved_search__updated ON saved_search (updated);

CREATE TABLE task_run_state_cache (
    id UUID DEFAULT (GEN_RANDOM_UUID()) NOT NULL, 
    created TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    updated TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    cache_key VARCHAR NOT NULL, 
    cache_expiration TIMESTAMP WITH TIME ZONE, 
    task_run_state_id UUID NOT NULL, 
    CONSTRAINT pk_task_run_state_cache PRIMARY KEY (id)
);

CREATE INDEX ix_task_run_state_cache__updated ON task_run_state_cache (updated);

CREATE TABLE deployment (
    id UUID DEFAULT (GEN_RANDOM_UUID()) NOT NULL, 
    created TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    updated TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    name VARCHAR NOT NULL, 
    schedule JSONB, 
    is_schedule_active BOOLEAN DEFAULT '1' NOT NULL, 
    tags JSONB DEFAULT '[]' NOT NULL, 
    parameters JSONB DEFAULT '{}' NOT NULL, 
    flow_data JSONB, 
    flow_runner_type VARCHAR, 
    flow_runner_config JSONB, 
    flow_id UUID NOT NULL, 
    CONSTRAINT pk_deployment PRIMARY KEY (id), 
    CONSTRAINT fk_deployment__flow_id__flow FOREIGN KEY(flow_id) REFERENCES flow (id) ON DELETE CASCADE
);

CREATE INDEX ix_deployment__flow_id ON deployment (flow_id);

CREATE INDEX ix_deployment__updated ON deployment (updated);

CREATE UNIQUE INDEX uq_deployment__flow_id_name ON deployment (flow_id, name);

CREATE TYPE state_type AS ENUM ('SCHEDULED', 'PENDING', 'RUNNING', 'COMPLETED', 'FAILED', 'CANCELLED');

CREATE TABLE flow_run (
    id UUID DEFAULT (GEN_RANDOM_UUID()) NOT NULL, 
    created TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    updated TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    name VARCHAR NOT NULL, 
    state_type state_type, 
    run_count INTEGER DEFAULT '0' NOT NULL, 
    expected_start_time TIMESTAMP WITH TIME ZONE, 
    next_scheduled_start_time TIMESTAMP WITH TIME ZONE, 
    start_time TIMESTAMP WITH TIME ZONE, 
    end_time TIMESTAMP WITH TIME ZONE, 
    total_run_time INTERVAL DEFAULT '0' NOT NULL, 
    flow_version VARCHAR, 
    parameters JSONB DEFAULT '{}' NOT NULL, 
    idempotency_key VARCHAR, 
    context JSONB DEFAULT '{}' NOT NULL, 
    empirical_policy JSONB DEFAULT '{}' NOT NULL, 
    tags JSONB DEFAULT '[]' NOT NULL, 
    flow_runner_type VARCHAR, 
    flow_runner_config JSONB, 
    empirical_config JSONB DEFAULT '{}' NOT NULL, 
    auto_scheduled BOOLEAN DEFAULT '0' NOT NULL, 
    flow_id UUID NOT NULL, 
    deployment_id UUID, 
    parent_task_run_id UUID, 
    state_id UUID, 
    CONSTRAINT pk_flow_run PRIMARY KEY (id), 
    CONSTRAINT fk_flow_run__deployment_id__deployment FOREIGN KEY(deployment_id) REFERENCES deployment (id) ON DELETE set null, 
    CONSTRAINT fk_flow_run__flow_id__flow FOREIGN KEY(flow_id) REFERENCES flow (id) ON DELETE cascade
);

CREATE INDEX ix_flow_run__deployment_id ON flow_run (deployment_id);

CREATE INDEX ix_flow_run__flow_id ON flow_run (flow_id);

CREATE INDEX ix_flow_run__flow_version ON flow_run (flow_version);

CREATE INDEX ix_flow_run__name ON flow_run (name);

CREATE INDEX ix_flow_run__parent_task_run_id ON flow_run (parent_task_run_id);

CREATE INDEX ix_flow_run__start_time ON flow_run (start_time);

CREATE INDEX ix_flow_run__state_id ON flow_run (state_id);

CREATE INDEX ix_flow_run__state_type ON flow_run (state_type);

CREATE INDEX ix_flow_run__updated ON flow_run (updated);

CREATE UNIQUE INDEX uq_flow_run__flow_id_idempotency_key ON flow_run (flow_id, idempotency_key);

CREATE TABLE flow_run_state (
    id UUID DEFAULT (GEN_RANDOM_UUID()) NOT NULL, 
    created TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    updated TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    type state_type NOT NULL, 
    timestamp TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    name VARCHAR NOT NULL, 
    message VARCHAR, 
    state_details JSONB DEFAULT '{}' NOT NULL, 
    data JSONB, 
    flow_run_id UUID NOT NULL, 
    CONSTRAINT pk_flow_run_state PRIMARY KEY (id), 
    CONSTRAINT fk_flow_run_state__flow_run_id__flow_run FOREIGN KEY(flow_run_id) REFERENCES flow_run (id) ON DELETE cascade
);

CREATE INDEX ix_flow_run_state__name ON flow_run_state (name);

CREATE INDEX ix_flow_run_state__type ON flow_run_state (type);

CREATE INDEX ix_flow_run_state__updated ON flow_run_state (updated);

CREATE TABLE task_run (
    id UUID DEFAULT (GEN_RANDOM_UUID()) NOT NULL, 
    created TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    updated TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    name VARCHAR NOT NULL, 
    state_type state_type, 
    run_count INTEGER DEFAULT '0' NOT NULL, 
    expected_start_time TIMESTAMP WITH TIME ZONE, 
    next_scheduled_start_time TIMESTAMP WITH TIME ZONE, 
    start_time TIMESTAMP WITH TIME ZONE, 
    end_time TIMESTAMP WITH TIME ZONE, 
    total_run_time INTERVAL DEFAULT '0' NOT NULL, 
    task_key VARCHAR NOT NULL, 
    dynamic_key VARCHAR NOT NULL, 
    cache_key VARCHAR, 
    cache_expiration TIMESTAMP WITH TIME ZONE, 
    task_version VARCHAR, 
    empirical_policy JSONB DEFAULT '{}' NOT NULL, 
    task_inputs JSONB DEFAULT '{}' NOT NULL, 
    tags JSONB DEFAULT '[]' NOT NULL, 
    flow_run_id UUID NOT NULL, 
    state_id UUID, 
    CONSTRAINT pk_task_run PRIMARY KEY (id), 
    CONSTRAINT fk_task_run__flow_run_id__flow_run FOREIGN KEY(flow_run_id) REFERENCES flow_run (id) ON DELETE cascade
);

CREATE INDEX ix_task_run__flow_run_id ON task_run (flow_run_id);

CREATE INDEX ix_task_run__name ON task_run (name);

CREATE INDEX ix_task_run__start_time ON task_run (start_time);

CREATE INDEX ix_task_run__state_id ON task_run (state_id);

CREATE INDEX ix_task_run__state_type ON task_run (state_type);

CREATE INDEX ix_task_run__updated ON task_run (updated);

CREATE UNIQUE INDEX uq_task_run__flow_run_id_task_key_dynamic_key ON task_run (flow_run_id, task_key, dynamic_key);

CREATE TABLE task_run_state (
    id UUID DEFAULT (GEN_RANDOM_UUID()) NOT NULL, 
    created TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    updated TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    type state_type NOT NULL, 
    timestamp TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    name VARCHAR NOT NULL, 
    message VARCHAR, 
    state_details JSONB DEFAULT '{}' NOT NULL, 
    data JSONB, 
    task_run_id UUID NOT NULL, 
    CONSTRAINT pk_task_run_state PRIMARY KEY (id), 
    CONSTRAINT fk_task_run_state__task_run_id__task_run FOREIGN KEY(task_run_id) REFERENCES task_run (id) ON DELETE cascade
);

CREATE INDEX ix_task_run_state__name ON task_run_state (name);

CREATE INDEX ix_task_run_state__type ON task_run_state (type);

CREATE INDEX ix_task_run_state__updated ON task_run_state (updated);

ALTER TABLE flow_run ADD CONSTRAINT fk_flow_run__parent_task_run_id__task_run FOREIGN KEY(parent_task_run_id) REFERENCES task_run (id) ON DELETE SET NULL;

ALTER TABLE flow_run ADD CONSTRAINT fk_flow_run__state_id__flow_run_state FOREIGN KEY(state_id) REFERENCES flow_run_state (id) ON DELETE SET NULL;

ALTER TABLE task_run ADD CONSTRAINT fk_task_run__state_id__task_run_state FOREIGN KEY(state_id) REFERENCES task_run_state (id) ON DELETE SET NULL;

CREATE INDEX ix_flow_run__end_time_desc ON flow_run (end_time DESC);

CREATE INDEX ix_flow_run__expected_start_time_desc ON flow_run (expected_start_time DESC);

CREATE INDEX ix_flow_run__next_scheduled_start_time_asc ON flow_run (next_scheduled_start_time ASC);

CREATE UNIQUE INDEX uq_flow_run_state__flow_run_id_timestamp_desc ON flow_run_state (flow_run_id, timestamp DESC);

CREATE INDEX ix_task_run__expected_start_time_desc ON task_run (expected_start_time DESC);

CREATE INDEX ix_task_run__next_scheduled_start_time_asc ON task_run (next_scheduled_start_time ASC);

CREATE INDEX ix_task_run__end_time_desc ON task_run (end_time DESC);

CREATE UNIQUE INDEX uq_task_run_state__task_run_id_timestamp_desc ON task_run_state (task_run_id, timestamp DESC);

CREATE INDEX ix_task_run_state_cache__cache_key_created_desc ON task_run_state_cache (cache_key, created DESC);

INSERT INTO alembic_version (version_num) VALUES ('25f4b90a7a42') RETURNING alembic_version.version_num;

COMMIT;

BEGIN;

-- Running upgrade 25f4b90a7a42 -> 5f376def75c3

CREATE TABLE block_data (
    id UUID DEFAULT (GEN_RANDOM_UUID()) NOT NULL, 
    created TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    updated TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    name VARCHAR NOT NULL, 
    blockref VARCHAR NOT NULL, 
    data JSONB DEFAULT '{}' NOT NULL, 
    CONSTRAINT pk_block_data PRIMARY KEY (id)
);

CREATE UNIQUE INDEX ix_block_data__name ON block_data (name);

CREATE INDEX ix_block_data__updated ON block_data (updated);

UPDATE alembic_version SET version_num='5f376def75c3' WHERE alembic_version.version_num = '25f4b90a7a42';

COMMIT;

BEGIN;

-- Running upgrade 5f376def75c3 -> 5bff7878e700

CREATE TABLE work_queue (
    id UUID DEFAULT (GEN_RANDOM_UUID()) NOT NULL, 
    created TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    updated TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    name VARCHAR NOT NULL, 
    filter JSONB DEFAULT '{}' NOT NULL, 
    description VARCHAR DEFAULT '' NOT NULL, 
    is_paused BOOLEAN DEFAULT '0' NOT NULL, 
    concurrency_limit INTEGER, 
    CONSTRAINT pk_work_queue PRIMARY KEY (id), 
    CONSTRAINT uq_work_queue__name UNIQUE (name)
);

CREATE INDEX ix_work_queue__updated ON work_queue (updated);

CREATE TABLE agent (
    id UUID DEFAULT (GEN_RANDOM_UUID()) NOT NULL, 
    created TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    updated TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    name VARCHAR NOT NULL, 
    last_activity_time TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    work_queue_id UUID NOT NULL, 
    CONSTRAINT pk_agent PRIMARY KEY (id), 
    CONSTRAINT fk_agent__work_queue_id__work_queue FOREIGN KEY(work_queue_id) REFERENCES work_queue (id), 
    CONSTRAINT uq_agent__name UNIQUE (name)
);

CREATE INDEX ix_agent__updated ON agent (updated);

CREATE INDEX ix_agent__work_queue_id ON agent (work_queue_id);

UPDATE alembic_version SET version_num='5bff7878e700' WHERE alembic_version.version_num = '5f376def75c3';

COMMIT;

BEGIN;

-- Running upgrade 5bff7878e700 -> 679e695af6ba

CREATE TABLE configuration (
    id UUID DEFAULT (GEN_RANDOM_UUID()) NOT NULL, 
    created TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    updated TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    key VARCHAR NOT NULL, 
    value JSONB NOT NULL, 
    CONSTRAINT pk_configuration PRIMARY KEY (id), 
    CONSTRAINT uq_configuration__key UNIQUE (key)
);

CREATE INDEX ix_configuration__key ON configuration (key);

CREATE INDEX ix_configuration__updated ON configuration (updated);

UPDATE alembic_version SET version_num='679e695af6ba' WHERE alembic_version.version_num = '5bff7878e700';

COMMIT;

BEGIN;

-- Running upgrade 679e695af6ba -> d9d98a9ebb6f

ALTER TABLE block_data
        RENAME TO block;;

UPDATE alembic_version SET version_num='d9d98a9ebb6f' WHERE alembic_version.version_num = '679e695af6ba';

COMMIT;

BEGIN;

-- Running upgrade d9d98a9ebb6f -> 4799f657a6a1

CREATE TABLE block_spec (
    id UUID DEFAULT (GEN_RANDOM_UUID()) NOT NULL, 
    created TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    updated TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    name VARCHAR NOT NULL, 
    version VARCHAR NOT NULL, 
    type VARCHAR, 
    fields JSONB DEFAULT '{}' NOT NULL, 
    CONSTRAINT pk_block_spec PRIMARY KEY (id)
);

CREATE INDEX ix_block_spec__updated ON block_spec (updated);

CREATE UNIQUE INDEX uq_block_spec__name_version ON block_spec (name, version);

CREATE INDEX ix_block_spec__type ON block_spec (type);

DROP INDEX ix_block_data__name;

DROP INDEX ix_block_data__updated;

CREATE INDEX ix_block__name ON block (name);

CREATE INDEX ix_block__updated ON block (updated);

ALTER TABLE block ADD CONSTRAINT uq_block__name UNIQUE (name);

UPDATE alembic_version SET version_num='4799f657a6a1' WHERE alembic_version.version_num = 'd9d98a9ebb6f';

COMMIT;

BEGIN;

-- Running upgrade 4799f657a6a1 -> d115556a8ab6

CREATE INDEX ix_flow_run__flow_runner_type ON flow_run (flow_runner_type);

UPDATE alembic_version SET version_num='d115556a8ab6' WHERE alembic_version.version_num = '4799f657a6a1';

COMMIT;

BEGIN;

-- Running upgrade d115556a8ab6 -> b68b3cad6b8a

ALTER TABLE block ADD COLUMN block_spec_id UUID NOT NULL;

ALTER TABLE block DROP CONSTRAINT uq_block__name;

CREATE UNIQUE INDEX uq_block__spec_id_name ON block (block_spec_id, name);

ALTER TABLE block ADD CONSTRAINT fk_block__block_spec_id__block_spec FOREIGN KEY(block_spec_id) REFERENCES block_spec (id) ON DELETE cascade;

ALTER TABLE block DROP COLUMN blockref;

ALTER TABLE block ADD COLUMN is_default_storage_block BOOLEAN DEFAULT '0';

CREATE INDEX ix_block__is_default_storage_block ON block (is_default_storage_block);

UPDATE alembic_version SET version_num='b68b3cad6b8a' WHERE alembic_version.version_num = 'd115556a8ab6';

COMMIT;

BEGIN;

-- Running upgrade b68b3cad6b8a -> 2e7e1428ffce

CREATE INDEX ix_flow__created ON flow (created);

UPDATE alembic_version SET version_num='2e7e1428ffce' WHERE alembic_version.version_num = 'b68b3cad6b8a';

COMMIT;

BEGIN;

-- Running upgrade 2e7e1428ffce -> 605ebb4e9155

ALTER TABLE flow_run ADD COLUMN state_name VARCHAR;

ALTER TABLE task_run ADD COLUMN state_name VARCHAR;

COMMIT;

CREATE INDEX CONCURRENTLY IF NOT EXISTS
            ix_flow_run__state_name
            ON flow_run(state_name);

CREATE INDEX CONCURRENTLY IF NOT EXISTS
            ix_task_run__state_name
            ON task_run(state_name);

BEGIN;

UPDATE alembic_version SET version_num='605ebb4e9155' WHERE alembic_version.version_num = '2e7e1428ffce';

COMMIT;

-- (not rendered: revision 14dc68cc5853 "Backfill state_name" needs a database connection offline: AttributeError: 'NoneType' object has no attribute 'rowcount')

BEGIN;

-- Running upgrade 14dc68cc5853 -> d38c5e6a9115

ALTER TABLE block_spec RENAME TO block_schema;

ALTER TABLE block RENAME TO block_document;

DROP INDEX ix_block__is_default_storage_block;

DROP INDEX ix_block__name;

DROP INDEX ix_block__updated;

DROP INDEX uq_block__spec_id_name;

ALTER TABLE block_document RENAME block_spec_id TO block_schema_id;

ALTER TABLE block_document RENAME is_default_storage_block TO is_default_storage_block_document;

ALTER TABLE block_document DROP CONSTRAINT fk_block__block_spec_id__block_spec;

ALTER TABLE block_document DROP CONSTRAINT pk_block_data;

CREATE INDEX ix_block_document__is_default_storage_block_document ON block_document (is_default_storage_block_document);

CREATE INDEX ix_block_document__name ON block_document (name);

CREATE INDEX ix_block_document__updated ON block_document (updated);

CREATE UNIQUE INDEX uq_block__schema_id_name ON block_document (block_schema_id, name);

DROP INDEX ix_block_spec__type;

DROP INDEX ix_block_spec__updated;

DROP INDEX uq_block_spec__name_version;

CREATE INDEX ix_block_schema__type ON block_schema (type);

CREATE INDEX ix_block_schema__updated ON block_schema (updated);

CREATE UNIQUE INDEX uq_block_schema__name_version ON block_schema (name, version);

ALTER TABLE block_schema DROP CONSTRAINT pk_block_spec;

ALTER TABLE block_schema ADD CONSTRAINT pk_block_schema PRIMARY KEY (id);

ALTER TABLE block_document ADD CONSTRAINT pk_block_document PRIMARY KEY (id);

ALTER TABLE block_document ADD CONSTRAINT fk_block__block_schema_id__block_schema FOREIGN KEY(block_schema_id) REFERENCES block_schema (id) ON DELETE cascade;

UPDATE alembic_version SET version_num='d38c5e6a9115' WHERE alembic_version.version_num = '14dc68cc5853';

COMMIT;

-- (not rendered: revision 1c9390e2f9c6 "Replace version with checksum and create block_type table" needs a database connection offline: NoInspectionAvailable: No inspection system is available for object of type <class 'sqlalchemy.engine.mock.MockConnection'>)

BEGIN;

-- Running upgrade 1c9390e2f9c6 -> dc7a3c6fd3e9

CREATE TABLE flow_run_alert_queue (
    id UUID DEFAULT (GEN_RANDOM_UUID()) NOT NULL, 
    created TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    updated TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    flow_run_alert_policy_id UUID NOT NULL, 
    flow_run_state_id UUID NOT NULL, 
    CONSTRAINT pk_flow_run_alert_queue PRIMARY KEY (id)
);

CREATE INDEX ix_flow_run_alert_queue__updated ON flow_run_alert_queue (updated);

CREATE TABLE flow_run_alert_policy (
    id UUID DEFAULT (GEN_RANDOM_UUID()) NOT NULL, 
    created TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    updated TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    name VARCHAR NOT NULL, 
    is_active BOOLEAN DEFAULT '1' NOT NULL, 
    state_names JSONB DEFAULT '[]' NOT NULL, 
    tags JSONB DEFAULT '[]' NOT NULL, 
    message_template VARCHAR, 
    block_document_id UUID NOT NULL, 
    CONSTRAINT pk_flow_run_alert PRIMARY KEY (id), 
    CONSTRAINT fk_flow_run_alert_policy__block_document_id__block_document FOREIGN KEY(block_document_id) REFERENCES block_document (id) ON DELETE cascade
);

CREATE INDEX ix_flow_run_alert_policy__name ON flow_run_alert_policy (name);

CREATE INDEX ix_flow_run_alert_policy__updated ON flow_run_alert_policy (updated);

UPDATE alembic_version SET version_num='dc7a3c6fd3e9' WHERE alembic_version.version_num = '1c9390e2f9c6';

COMMIT;

-- (not rendered: revision 724e6dcc6b5d "Add BlockSchema capabilities" needs a database connection offline: NoInspectionAvailable: No inspection system is available for object of type <class 'sqlalchemy.engine.mock.MockConnection'>)

-- (not rendered: revision 2fe6fe6ca16e "Adds block schema references and block document references" needs a database connection offline: NoInspectionAvailable: No inspection system is available for object of type <class 'sqlalchemy.engine.mock.MockConnection'>)

BEGIN;

-- Running upgrade 2fe6fe6ca16e -> cdcb4018dd0e

ALTER TABLE flow_run_alert_policy RENAME TO flow_run_notification_policy;

ALTER INDEX pk_flow_run_alert RENAME TO pk_flow_run_notification_policy;;

ALTER INDEX ix_flow_run_alert_policy__name RENAME TO ix_flow_run_notification_policy__name;;

ALTER INDEX ix_flow_run_alert_policy__updated RENAME TO ix_flow_run_notification_policy__updated;;

ALTER TABLE flow_run_alert_queue RENAME TO flow_run_notification_queue;

ALTER INDEX pk_flow_run_alert_queue RENAME TO pk_flow_run_notification_queue;;

ALTER INDEX ix_flow_run_alert_queue__updated RENAME TO ix_flow_run_notification_queue__updated;;

ALTER TABLE flow_run_notification_queue RENAME flow_run_alert_policy_id TO flow_run_notification_policy_id;

UPDATE alembic_version SET version_num='cdcb4018dd0e' WHERE alembic_version.version_num = '2fe6fe6ca16e';

COMMIT;

BEGIN;

-- Running upgrade cdcb4018dd0e -> 77ebcc9cf355

CREATE EXTENSION IF NOT EXISTS pg_trgm;;

COMMIT;

CREATE INDEX CONCURRENTLY 
            trgm_ix_flow_name 
            ON flow USING gin (name gin_trgm_ops);;

CREATE INDEX CONCURRENTLY 
            trgm_ix_flow_run_name 
            ON flow_run USING gin (name gin_trgm_ops);;

CREATE INDEX CONCURRENTLY 
            trgm_ix_task_run_name 
            ON task_run USING gin (name gin_trgm_ops);;

CREATE INDEX CONCURRENTLY 
            trgm_ix_deployment_name 
            ON deployment USING gin (name gin_trgm_ops);;

BEGIN;

UPDATE alembic_version SET version_num='77ebcc9cf355' WHERE alembic_version.version_num = 'cdcb4018dd0e';

COMMIT;

BEGIN;

-- Running upgrade 77ebcc9cf355 -> 3a7c41d3b464

ALTER TABLE block_type ADD COLUMN description VARCHAR;

ALTER TABLE block_type ADD COLUMN code_example VARCHAR;

UPDATE alembic_version SET version_num='3a7c41d3b464' WHERE alembic_version.version_num = '77ebcc9cf355';

COMMIT;

BEGIN;

-- Running upgrade 3a7c41d3b464 -> 61c76ee09e02

ALTER TABLE block_document ADD COLUMN is_anonymous BOOLEAN DEFAULT '0' NOT NULL;

CREATE INDEX ix_block_document__is_anonymous ON block_document (is_anonymous);

UPDATE alembic_version SET version_num='61c76ee09e02' WHERE alembic_version.version_num = '3a7c41d3b464';

COMMIT;

BEGIN;

-- Running upgrade 61c76ee09e02 -> d335ad57d5ba

CREATE INDEX ix_block_schema__block_type_id ON block_schema (block_type_id);

CREATE INDEX ix_block_schema__created ON block_schema (created);

DROP INDEX ix_block_schema__checksum;

UPDATE alembic_version SET version_num='d335ad57d5ba' WHERE alembic_version.version_num = '61c76ee09e02';

COMMIT;

BEGIN;

-- Running upgrade d335ad57d5ba -> 29ad9bef6147

COMMIT;

CREATE INDEX CONCURRENTLY 
            trgm_ix_block_type_name 
            ON block_type USING gin (name gin_trgm_ops);;

CREATE INDEX CONCURRENTLY
            ix_block_schema__capabilities
            ON block_schema USING gin (capabilities);

BEGIN;

UPDATE alembic_version SET version_num='29ad9bef6147' WHERE alembic_version.version_num = 'd335ad57d5ba';

COMMIT;

BEGIN;

-- Running upgrade 29ad9bef6147 -> 7296741dff68

ALTER TABLE block_type ADD COLUMN is_protected BOOLEAN DEFAULT '0' NOT NULL;

UPDATE alembic_version SET version_num='7296741dff68' WHERE alembic_version.version_num = '29ad9bef6147';

COMMIT;

BEGIN;

-- Running upgrade 7296741dff68 -> 2f46fc3f3beb

DROP INDEX ix_flow_run_notification_policy__name;

ALTER TABLE flow_run_notification_policy DROP COLUMN name;

UPDATE alembic_version SET version_num='2f46fc3f3beb' WHERE alembic_version.version_num = '7296741dff68';

COMMIT;

BEGIN;

-- Running upgrade 2f46fc3f3beb -> 813ddf14e2de

ALTER TABLE deployment ADD COLUMN description TEXT;

UPDATE alembic_version SET version_num='813ddf14e2de' WHERE alembic_version.version_num = '2f46fc3f3beb';

COMMIT;

-- (not rendered: revision 4cdc2ba709a4 "Migrates block schemas with new secrets fields" needs a database connection offline: NoInspectionAvailable: No inspection system is available for object of type <class 'sqlalchemy.engine.mock.MockConnection'>)

BEGIN;

-- Running upgrade 4cdc2ba709a4 -> e905fd199258

DELETE FROM block_type WHERE name = 'Debug Print Notification';

UPDATE alembic_version SET version_num='e905fd199258' WHERE alembic_version.version_num = '4cdc2ba709a4';

COMMIT;

BEGIN;

-- Running upgrade e905fd199258 -> 112c68143fc3

ALTER TABLE deployment ADD COLUMN infrastructure_document_id UUID;

ALTER TABLE deployment ADD CONSTRAINT fk_deployment__infrastructure_document_id__block_document FOREIGN KEY(infrastructure_document_id) REFERENCES block_document (id) ON DELETE CASCADE;

ALTER TABLE flow_run ADD COLUMN infrastructure_document_id UUID;

ALTER TABLE flow_run ADD CONSTRAINT fk_flow_run__infrastructure_document_id__block_document FOREIGN KEY(infrastructure_document_id) REFERENCES block_document (id) ON DELETE CASCADE;

UPDATE alembic_version SET version_num='112c68143fc3' WHERE alembic_version.version_num = 'e905fd199258';

COMMIT;

BEGIN;

-- Running upgrade 112c68143fc3 -> 0f27d462bf6d

DROP INDEX ix_block_document__is_default_storage_block_document;

ALTER TABLE block_document DROP COLUMN is_default_storage_block_document;

UPDATE alembic_version SET version_num='0f27d462bf6d' WHERE alembic_version.version_num = '112c68143fc3';

COMMIT;

-- (not rendered: revision bb4dc90d3e29 "Renames existing block types and deletes removed block types" needs a database connection offline: NoInspectionAvailable: No inspection system is available for object of type <class 'sqlalchemy.engine.mock.MockConnection'>)

BEGIN;

-- Running upgrade bb4dc90d3e29 -> 0cf7311d6ea6

ALTER TYPE state_type ADD VALUE IF NOT EXISTS 'CRASHED';;

UPDATE alembic_version SET version_num='0cf7311d6ea6' WHERE alembic_version.version_num = 'bb4dc90d3e29';

COMMIT;

BEGIN;

-- Running upgrade 0cf7311d6ea6 -> e085c9cbf8ce

ALTER TABLE deployment DROP COLUMN flow_runner_type;

ALTER TABLE deployment DROP COLUMN flow_runner_config;

ALTER TABLE deployment DROP COLUMN description;

DROP INDEX ix_flow_run__flow_runner_type;

ALTER TABLE flow_run DROP COLUMN flow_runner_type;

ALTER TABLE flow_run DROP COLUMN flow_runner_config;

ALTER TABLE flow_run DROP COLUMN empirical_config;

UPDATE alembic_version SET version_num='e085c9cbf8ce' WHERE alembic_version.version_num = '0cf7311d6ea6';

COMMIT;

-- (not rendered: revision 4ff2f2bf81f4 "Adds block type slug" needs a database connection offline: NoInspectionAvailable: No inspection system is available for object of type <class 'sqlalchemy.engine.mock.MockConnection'>)

BEGIN;

-- Running upgrade 4ff2f2bf81f4 -> add97ce1937d

ALTER TABLE deployment ADD COLUMN description TEXT;

ALTER TABLE deployment ADD COLUMN manifest_path VARCHAR;

UPDATE deployment SET manifest_path = '';;

UPDATE deployment SET is_schedule_active = False;;

ALTER TABLE deployment ADD COLUMN parameter_openapi_schema JSONB;

ALTER TABLE deployment ADD COLUMN storage_document_id UUID;

ALTER TABLE deployment ADD CONSTRAINT fk_deployment__storage_document_id__block_document FOREIGN KEY(storage_document_id) REFERENCES block_document (id) ON DELETE CASCADE;

UPDATE alembic_version SET version_num='add97ce1937d' WHERE alembic_version.version_num = '4ff2f2bf81f4';

COMMIT;

BEGIN;

-- Running upgrade add97ce1937d -> fa985d474982

COMMIT;

CREATE INDEX CONCURRENTLY ix_flow_run__infrastructure_document_id ON flow_run (infrastructure_document_id);

BEGIN;

UPDATE alembic_version SET version_num='fa985d474982' WHERE alembic_version.version_num = 'add97ce1937d';

COMMIT;

BEGIN;

-- Running upgrade fa985d474982 -> 97e212ea6545

ALTER TABLE deployment ADD COLUMN version VARCHAR;

UPDATE alembic_version SET version_num='97e212ea6545' WHERE alembic_version.version_num = 'fa985d474982';

COMMIT;

BEGIN;

-- Running upgrade 97e212ea6545 -> 7737221bf8a4

ALTER INDEX ix_concurrency_limit__tag RENAME TO uq_concurrency_limit__tag;

UPDATE alembic_version SET version_num='7737221bf8a4' WHERE alembic_version.version_num = '97e212ea6545';

COMMIT;

BEGIN;

-- Running upgrade 7737221bf8a4 -> 60e428f92a75

ALTER TABLE deployment ADD COLUMN infra_overrides JSONB DEFAULT '{}' NOT NULL;

ALTER TABLE deployment ADD COLUMN path VARCHAR;

ALTER TABLE deployment ADD COLUMN entrypoint VARCHAR;

UPDATE alembic_version SET version_num='60e428f92a75' WHERE alembic_version.version_num = '7737221bf8a4';

COMMIT;

BEGIN;

-- Running upgrade 60e428f92a75 -> 77eb737fc759

ALTER TABLE deployment ADD COLUMN work_queue_name VARCHAR;

CREATE INDEX ix_deployment__work_queue_name ON deployment (work_queue_name);

ALTER TABLE flow_run ADD COLUMN work_queue_name VARCHAR;

CREATE INDEX ix_flow_run__work_queue_name ON flow_run (work_queue_name);

ALTER TABLE work_queue ALTER COLUMN filter DROP NOT NULL;

ALTER TABLE work_queue ALTER COLUMN filter DROP DEFAULT;

UPDATE alembic_version SET version_num='77eb737fc759' WHERE alembic_version.version_num = '60e428f92a75';

COMMIT;

BEGIN;

-- Running upgrade 77eb737fc759 -> 2d5e000696f1

ALTER TABLE block_schema ADD COLUMN version VARCHAR DEFAULT 'non-versioned' NOT NULL;

DROP INDEX uq_block_schema__checksum;

CREATE UNIQUE INDEX uq_block_schema__checksum_version ON block_schema (checksum, version);

UPDATE alembic_version SET version_num='2d5e000696f1' WHERE alembic_version.version_num = '77eb737fc759';

COMMIT;

-- (not rendered: revision 22b7cb02e593 "Add state_timestamp" needs a database connection offline: AttributeError: 'NoneType' object has no attribute 'rowcount')

BEGIN;

-- Running upgrade 22b7cb02e593 -> ad4b1b4d1e9d

CREATE INDEX ix_deployment__created ON deployment (created);

UPDATE alembic_version SET version_num='ad4b1b4d1e9d' WHERE alembic_version.version_num = '22b7cb02e593';

COMMIT;

BEGIN;

-- Running upgrade ad4b1b4d1e9d -> 6d548701edef

ALTER TABLE deployment ADD COLUMN created_by JSONB;

ALTER TABLE deployment ADD COLUMN updated_by JSONB;

ALTER TABLE flow_run ADD COLUMN created_by JSONB;

UPDATE alembic_version SET version_num='6d548701edef' WHERE alembic_version.version_num = 'ad4b1b4d1e9d';

COMMIT;

BEGIN;

-- Running upgrade 6d548701edef -> 3ced59d8806b

ALTER TABLE work_queue ADD COLUMN last_polled TIMESTAMP WITH TIME ZONE;

UPDATE alembic_version SET version_num='3ced59d8806b' WHERE alembic_version.version_num = '6d548701edef';

COMMIT;

BEGIN;

-- Running upgrade 3ced59d8806b -> 8ea825da948d

ALTER TABLE task_run ADD COLUMN flow_run_run_count INTEGER DEFAULT '0' NOT NULL;

UPDATE alembic_version SET version_num='8ea825da948d' WHERE alembic_version.version_num = '3ced59d8806b';

COMMIT;

BEGIN;

-- Running upgrade 8ea825da948d -> 41e5ed9e1034

CREATE EXTENSION IF NOT EXISTS pg_trgm;;

COMMIT;

CREATE INDEX CONCURRENTLY
            trgm_ix_work_queue_name
            ON work_queue USING gin (name gin_trgm_ops);;

BEGIN;

UPDATE alembic_version SET version_num='41e5ed9e1034' WHERE alembic_version.version_num = '8ea825da948d';

COMMIT;

BEGIN;

-- Running upgrade 41e5ed9e1034 -> 54c1876c68ae

COMMIT;

CREATE INDEX CONCURRENTLY ix_flow_run__scheduler_deployment_id_auto_scheduled_next_scheduled_start_time 
            ON flow_run (deployment_id, auto_scheduled, next_scheduled_start_time) 
            WHERE state_type = 'SCHEDULED';;

BEGIN;

UPDATE alembic_version SET version_num='54c1876c68ae' WHERE alembic_version.version_num = '41e5ed9e1034';

COMMIT;

BEGIN;

-- Running upgrade 54c1876c68ae -> 8caf7c1fd82c

COMMIT;

CREATE INDEX CONCURRENTLY
            ix_flow_run__coalesce_start_time_expected_start_time_asc
            ON flow_run (coalesce(start_time, expected_start_time) ASC);;

BEGIN;

COMMIT;

CREATE INDEX CONCURRENTLY
            ix_flow_run__coalesce_start_time_expected_start_time_desc
            ON flow_run (coalesce(start_time, expected_start_time) DESC);;

BEGIN;

UPDATE alembic_version SET version_num='8caf7c1fd82c' WHERE alembic_version.version_num = '54c1876c68ae';

COMMIT;

BEGIN;

-- Running upgrade 8caf7c1fd82c -> 5d526270ddb4

ALTER TABLE flow_run ADD COLUMN infrastructure_pid VARCHAR;

UPDATE alembic_version SET version_num='5d526270ddb4' WHERE alembic_version.version_num = '8caf7c1fd82c';

COMMIT;

BEGIN;

-- Running upgrade 5d526270ddb4 -> 5e4f924ff96c

ALTER TYPE state_type ADD VALUE IF NOT EXISTS 'PAUSED';;

UPDATE alembic_version SET version_num='5e4f924ff96c' WHERE alembic_version.version_num = '5d526270ddb4';

COMMIT;

BEGIN;

-- Running upgrade 5e4f924ff96c -> f7587d6c5776

CREATE TABLE worker_pool (
    id UUID DEFAULT (GEN_RANDOM_UUID()) NOT NULL, 
    created TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    updated TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    name VARCHAR NOT NULL, 
    description VARCHAR, 
    type VARCHAR, 
    base_job_template JSONB DEFAULT '{}' NOT NULL, 
    is_paused BOOLEAN DEFAULT '0' NOT NULL, 
    concurrency_limit INTEGER, 
    default_queue_id UUID, 
    CONSTRAINT pk_worker_pool PRIMARY KEY (id), 
    CONSTRAINT uq_worker_pool__name UNIQUE (name)
);

CREATE INDEX ix_worker_pool__updated ON worker_pool (updated);

CREATE INDEX ix_worker_pool__type ON worker_pool (type);

CREATE TABLE worker (
    id UUID DEFAULT (GEN_RANDOM_UUID()) NOT NULL, 
    created TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    updated TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    name VARCHAR NOT NULL, 
    last_heartbeat_time TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    worker_pool_id UUID NOT NULL, 
    CONSTRAINT pk_worker PRIMARY KEY (id), 
    CONSTRAINT fk_worker__worker_pool_id__worker_pool FOREIGN KEY(worker_pool_id) REFERENCES worker_pool (id) ON DELETE cascade, 
    CONSTRAINT uq_worker__worker_pool_id_name UNIQUE (worker_pool_id, name)
);

CREATE INDEX ix_worker__updated ON worker (updated);

CREATE INDEX ix_worker__worker_pool_id ON worker (worker_pool_id);

CREATE INDEX ix_worker__worker_pool_id_last_heartbeat_time ON worker (worker_pool_id, last_heartbeat_time);

CREATE TABLE worker_pool_queue (
    id UUID DEFAULT (GEN_RANDOM_UUID()) NOT NULL, 
    created TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    updated TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    name VARCHAR NOT NULL, 
    description VARCHAR, 
    is_paused BOOLEAN DEFAULT '0' NOT NULL, 
    concurrency_limit INTEGER, 
    priority INTEGER NOT NULL, 
    worker_pool_id UUID NOT NULL, 
    CONSTRAINT pk_worker_pool_queue PRIMARY KEY (id), 
    CONSTRAINT fk_worker_pool_queue__worker_pool_id__worker_pool FOREIGN KEY(worker_pool_id) REFERENCES worker_pool (id) ON DELETE cascade, 
    CONSTRAINT uq_worker_pool_queue__worker_pool_id_name UNIQUE (worker_pool_id, name)
);

CREATE INDEX ix_worker_pool_queue__updated ON worker_pool_queue (updated);

CREATE INDEX ix_worker_pool_queue__worker_pool_id_priority ON worker_pool_queue (worker_pool_id, priority);

CREATE INDEX ix_worker_pool_queue__worker_pool_id ON worker_pool_queue (worker_pool_id);

ALTER TABLE worker_pool ADD CONSTRAINT fk_worker_pool__default_queue_id__worker_pool_queue FOREIGN KEY(default_queue_id) REFERENCES worker_pool_queue (id) ON DELETE RESTRICT;

ALTER TABLE deployment ADD COLUMN worker_pool_queue_id UUID;

CREATE INDEX ix_deployment__worker_pool_queue_id ON deployment (worker_pool_queue_id);

ALTER TABLE deployment ADD CONSTRAINT fk_deployment__worker_pool_queue_id__worker_pool_queue FOREIGN KEY(worker_pool_queue_id) REFERENCES worker_pool_queue (id) ON DELETE SET NULL;

ALTER TABLE flow_run ADD COLUMN worker_pool_queue_id UUID;

CREATE INDEX ix_flow_run__worker_pool_queue_id ON flow_run (worker_pool_queue_id);

ALTER TABLE flow_run ADD CONSTRAINT fk_flow_run__worker_pool_queue_id__worker_pool_queue FOREIGN KEY(worker_pool_queue_id) REFERENCES worker_pool_queue (id) ON DELETE SET NULL;

UPDATE alembic_version SET version_num='f7587d6c5776' WHERE alembic_version.version_num = '5e4f924ff96c';

COMMIT;

BEGIN;

-- Running upgrade f7587d6c5776 -> d481d5058a19

ALTER TABLE deployment DROP COLUMN worker_pool_queue_id;

ALTER TABLE flow_run DROP COLUMN worker_pool_queue_id;

ALTER TABLE worker_pool DROP CONSTRAINT fk_worker_pool__default_queue_id__worker_pool_queue;

DROP TABLE worker_pool_queue;

DROP TABLE worker;

DROP TABLE worker_pool;

CREATE TABLE work_pool (
    id UUID DEFAULT (GEN_RANDOM_UUID()) NOT NULL, 
    created TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    updated TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    name VARCHAR NOT NULL, 
    description VARCHAR, 
    type VARCHAR, 
    base_job_template JSONB DEFAULT '{}' NOT NULL, 
    is_paused BOOLEAN DEFAULT '0' NOT NULL, 
    concurrency_limit INTEGER, 
    default_queue_id UUID, 
    CONSTRAINT pk_work_pool PRIMARY KEY (id), 
    CONSTRAINT uq_work_pool__name UNIQUE (name)
);

CREATE INDEX ix_work_pool__updated ON work_pool (updated);

CREATE INDEX ix_work_pool__type ON work_pool (type);

CREATE TABLE worker (
    id UUID DEFAULT (GEN_RANDOM_UUID()) NOT NULL, 
    created TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    updated TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    name VARCHAR NOT NULL, 
    last_heartbeat_time TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    work_pool_id UUID NOT NULL, 
    CONSTRAINT pk_worker PRIMARY KEY (id), 
    CONSTRAINT fk_worker__work_pool_id__work_pool FOREIGN KEY(work_pool_id) REFERENCES work_pool (id) ON DELETE cascade, 
    CONSTRAINT uq_worker__work_pool_id_name UNIQUE (work_pool_id, name)
);

CREATE INDEX ix_worker__updated ON worker (updated);

CREATE INDEX ix_worker__work_pool_id ON worker (work_pool_id);

CREATE INDEX ix_worker__work_pool_id_last_heartbeat_time ON worker (work_pool_id, last_heartbeat_time);

CREATE TABLE work_pool_queue (
    id UUID DEFAULT (GEN_RANDOM_UUID()) NOT NULL, 
    created TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    updated TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    name VARCHAR NOT NULL, 
    description VARCHAR, 
    is_paused BOOLEAN DEFAULT '0' NOT NULL, 
    concurrency_limit INTEGER, 
    priority INTEGER NOT NULL, 
    work_pool_id UUID NOT NULL, 
    CONSTRAINT pk_work_pool_queue PRIMARY KEY (id), 
    CONSTRAINT fk_work_pool_queue__work_pool_id__work_pool FOREIGN KEY(work_pool_id) REFERENCES work_pool (id) ON DELETE cascade, 
    CONSTRAINT uq_work_pool_queue__work_pool_id_name UNIQUE (work_pool_id, name)
);

CREATE INDEX ix_work_pool_queue__updated ON work_pool_queue (updated);

CREATE INDEX ix_work_pool_queue__work_pool_id_priority ON work_pool_queue (work_pool_id, priority);

CREATE INDEX ix_work_pool_queue__work_pool_id ON work_pool_queue (work_pool_id);

ALTER TABLE work_pool ADD CONSTRAINT fk_work_pool__default_queue_id__work_pool_queue FOREIGN KEY(default_queue_id) REFERENCES work_pool_queue (id) ON DELETE RESTRICT;

ALTER TABLE deployment ADD COLUMN work_pool_queue_id UUID;

CREATE INDEX ix_deployment__work_pool_queue_id ON deployment (work_pool_queue_id);

ALTER TABLE deployment ADD CONSTRAINT fk_deployment__work_pool_queue_id__work_pool_queue FOREIGN KEY(work_pool_queue_id) REFERENCES work_pool_queue (id) ON DELETE SET NULL;

ALTER TABLE flow_run ADD COLUMN work_pool_queue_id UUID;

CREATE INDEX ix_flow_run__work_pool_queue_id ON flow_run (work_pool_queue_id);

ALTER TABLE flow_run ADD CONSTRAINT fk_flow_run__work_pool_queue_id__work_pool_queue FOREIGN KEY(work_pool_queue_id) REFERENCES work_pool_queue (id) ON DELETE SET NULL;

UPDATE alembic_version SET version_num='d481d5058a19' WHERE alembic_version.version_num = 'f7587d6c5776';

COMMIT;

BEGIN;

-- Running upgrade d481d5058a19 -> 9326a6aee18b

ALTER TYPE state_type ADD VALUE IF NOT EXISTS 'CANCELLING';;

UPDATE alembic_version SET version_num='9326a6aee18b' WHERE alembic_version.version_num = 'd481d5058a19';

COMMIT;

BEGIN;

-- Running upgrade 9326a6aee18b -> 2882cd2df463

CREATE TABLE artifact (
    id UUID DEFAULT (GEN_RANDOM_UUID()) NOT NULL, 
    created TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    updated TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    key VARCHAR, 
    type VARCHAR, 
    data JSON, 
    metadata_ JSON, 
    task_run_id UUID, 
    task_run_state_id UUID, 
    flow_run_id UUID, 
    flow_run_state_id UUID, 
    CONSTRAINT pk_artifact PRIMARY KEY (id), 
    CONSTRAINT fk_artifact__flow_run_id__flow_run FOREIGN KEY(flow_run_id) REFERENCES flow_run (id), 
    CONSTRAINT fk_artifact__flow_run_state_id__flow_run_state FOREIGN KEY(flow_run_state_id) REFERENCES flow_run_state (id), 
    CONSTRAINT fk_artifact__task_run_id__task_run FOREIGN KEY(task_run_id) REFERENCES task_run (id), 
    CONSTRAINT fk_artifact__task_run_state_id__task_run_state FOREIGN KEY(task_run_state_id) REFERENCES task_run_state (id)
);

CREATE INDEX ix_artifact__flow_run_id ON artifact (flow_run_id);

CREATE INDEX ix_artifact__flow_run_state_id ON artifact (flow_run_state_id);

CREATE UNIQUE INDEX ix_artifact__key ON artifact (key);

CREATE INDEX ix_artifact__task_run_id ON artifact (task_run_id);

CREATE INDEX ix_artifact__task_run_state_id ON artifact (task_run_state_id);

CREATE INDEX ix_artifact__updated ON artifact (updated);

ALTER TABLE flow_run_state ADD COLUMN result_artifact_id UUID;

CREATE INDEX ix_flow_run_state__result_artifact_id ON flow_run_state (result_artifact_id);

ALTER TABLE flow_run_state ADD CONSTRAINT fk_flow_run_state__result_artifact_id__artifact FOREIGN KEY(result_artifact_id) REFERENCES artifact (id) ON DELETE SET NULL;

ALTER TABLE task_run_state ADD COLUMN result_artifact_id UUID;

CREATE INDEX ix_task_run_state__result_artifact_id ON task_run_state (result_artifact_id);

ALTER TABLE task_run_state ADD CONSTRAINT fk_task_run_state__result_artifact_id__artifact FOREIGN KEY(result_artifact_id) REFERENCES artifact (id) ON DELETE SET NULL;

UPDATE alembic_version SET version_num='2882cd2df463' WHERE alembic_version.version_num = '9326a6aee18b';

COMMIT;

-- (not rendered: revision 2882cd2df464 "Adds a helper index for the artifact data migration" needs a database connection offline: AttributeError: 'NoneType' object has no attribute 'rowcount')

-- (not rendered: revision 2882cd2df465 "Migrates state data to the artifact table" needs a database connection offline: AttributeError: 'NoneType' object has no attribute 'rowcount')

BEGIN;

-- Running upgrade 2882cd2df465 -> 2882cd2df466

DROP INDEX ix_artifact__task_run_state_id;

ALTER TABLE artifact DROP COLUMN task_run_state_id;

DROP INDEX ix_artifact__flow_run_state_id;

ALTER TABLE artifact DROP COLUMN flow_run_state_id;

DROP INDEX ix_flow_run_state__has_data;

ALTER TABLE flow_run_state DROP COLUMN has_data;

DROP INDEX ix_task_run_state__has_data;

ALTER TABLE task_run_state DROP COLUMN has_data;

UPDATE alembic_version SET version_num='2882cd2df466' WHERE alembic_version.version_num = '2882cd2df465';

COMMIT;

BEGIN;

-- Running upgrade 2882cd2df466 -> 0a1250a5aa25

ALTER TABLE work_pool DROP CONSTRAINT fk_work_pool__default_queue_id__work_pool_queue;

DROP INDEX ix_deployment__work_pool_queue_id;

ALTER TABLE deployment DROP COLUMN work_pool_queue_id;

DROP INDEX ix_flow_run__work_pool_queue_id;

ALTER TABLE flow_run DROP COLUMN work_pool_queue_id;

ALTER TABLE work_queue ADD COLUMN priority INTEGER DEFAULT '1' NOT NULL;

ALTER TABLE work_queue ADD COLUMN work_pool_id UUID;

ALTER TABLE flow_run ADD COLUMN work_queue_id UUID;

CREATE INDEX ix_flow_run__work_queue_id ON flow_run (work_queue_id);

ALTER TABLE flow_run ADD CONSTRAINT fk_flow_run__work_queue_id__work_queue FOREIGN KEY(work_queue_id) REFERENCES work_queue (id) ON DELETE SET NULL;

ALTER TABLE deployment ADD COLUMN work_queue_id UUID;

CREATE INDEX ix_deployment__work_queue_id ON deployment (work_queue_id);

ALTER TABLE deployment ADD CONSTRAINT fk_deployment__work_queue_id__work_queue FOREIGN KEY(work_queue_id) REFERENCES work_queue (id) ON DELETE SET NULL;

ALTER TABLE work_pool ADD CONSTRAINT fk_work_pool__default_queue_id__work_queue FOREIGN KEY(default_queue_id) REFERENCES work_queue (id) ON DELETE RESTRICT;

ALTER TABLE work_pool ALTER COLUMN type SET NOT NULL;

ALTER TABLE work_queue ADD CONSTRAINT fk_work_queue__work_pool_id__work_pool FOREIGN KEY(work_pool_id) REFERENCES work_pool (id) ON DELETE cascade;

CREATE INDEX ix_work_queue__work_pool_id ON work_queue (work_pool_id);

CREATE INDEX ix_work_queue__work_pool_id_priority ON work_queue (work_pool_id, priority);

UPDATE alembic_version SET version_num='0a1250a5aa25' WHERE alembic_version.version_num = '2882cd2df466';

COMMIT;

-- (not rendered: revision f98ae6d8e2cc "Work queue data migration" needs a database connection offline: AttributeError: 'NoneType' object has no attribute 'fetchone')

BEGIN;

-- Running upgrade f98ae6d8e2cc -> 2a88656f4a23

DROP INDEX ix_work_pool_queue__updated;

DROP INDEX ix_work_pool_queue__work_pool_id;

DROP INDEX ix_work_pool_queue__work_pool_id_priority;

DROP TABLE work_pool_queue;

ALTER TABLE work_queue ALTER COLUMN work_pool_id SET NOT NULL;

UPDATE alembic_version SET version_num='2a88656f4a23' WHERE alembic_version.version_num = 'f98ae6d8e2cc';

COMMIT;

BEGIN;

-- Running upgrade 2a88656f4a23 -> cfdfec5d7557

ALTER TABLE artifact DROP CONSTRAINT fk_artifact__task_run_id__task_run;

ALTER TABLE artifact DROP CONSTRAINT fk_artifact__flow_run_id__flow_run;

UPDATE alembic_version SET version_num='cfdfec5d7557' WHERE alembic_version.version_num = '2a88656f4a23';

COMMIT;

BEGIN;

-- Running upgrade cfdfec5d7557 -> 7d918a392297

COMMIT;

ALTER TABLE flow_run DROP CONSTRAINT IF EXISTS fk_flow_run__deployment_id__deployment;

BEGIN;

UPDATE alembic_version SET version_num='7d918a392297' WHERE alembic_version.version_num = 'cfdfec5d7557';

COMMIT;

BEGIN;

-- Running upgrade 7d918a392297 -> 4a1a0e4f89de

ALTER TABLE artifact ADD COLUMN description VARCHAR;

UPDATE alembic_version SET version_num='4a1a0e4f89de' WHERE alembic_version.version_num = '7d918a392297';

COMMIT;

BEGIN;

-- Running upgrade 4a1a0e4f89de -> aa84ac237ce8

DROP INDEX ix_artifact__key;

CREATE INDEX ix_artifact__key ON artifact (key);

UPDATE alembic_version SET version_num='aa84ac237ce8' WHERE alembic_version.version_num = '4a1a0e4f89de';

COMMIT;

BEGIN;

-- Running upgrade aa84ac237ce8 -> d20618ce678e

CREATE TABLE artifact_collection (
    id UUID DEFAULT (GEN_RANDOM_UUID()) NOT NULL, 
    created TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    updated TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    key VARCHAR NOT NULL, 
    latest_id UUID, 
    CONSTRAINT pk_artifact_collection PRIMARY KEY (id), 
    CONSTRAINT uq_artifact_collection__key UNIQUE (key)
);

CREATE INDEX ix_artifact_collection__key_latest_id ON artifact_collection (key, latest_id);

UPDATE alembic_version SET version_num='d20618ce678e' WHERE alembic_version.version_num = 'aa84ac237ce8';

COMMIT;

BEGIN;

-- Running upgrade d20618ce678e -> 46bd82c6279a

CREATE INDEX 
        IF NOT EXISTS
        ix_artifact__key_created_desc
        ON artifact (key, created DESC)
        INCLUDE (id, updated, type, task_run_id, flow_run_id);

UPDATE alembic_version SET version_num='46bd82c6279a' WHERE alembic_version.version_num = 'd20618ce678e';

COMMIT;

BEGIN;

-- Running upgrade 46bd82c6279a -> 3bf47e3ce2dd

CREATE INDEX ix_log__flow_run_id_timestamp ON log (flow_run_id, timestamp);

UPDATE alembic_version SET version_num='3bf47e3ce2dd' WHERE alembic_version.version_num = '46bd82c6279a';

COMMIT;

BEGIN;

-- Running upgrade 3bf47e3ce2dd -> 6a1eb3d442e4

ALTER TABLE artifact_collection ADD COLUMN task_run_id UUID;

ALTER TABLE artifact_collection ADD COLUMN flow_run_id UUID;

ALTER TABLE artifact_collection ADD COLUMN type VARCHAR;

ALTER TABLE artifact_collection ADD COLUMN data JSON;

ALTER TABLE artifact_collection ADD COLUMN description VARCHAR;

ALTER TABLE artifact_collection ADD COLUMN metadata_ JSON;

UPDATE alembic_version SET version_num='6a1eb3d442e4' WHERE alembic_version.version_num = '3bf47e3ce2dd';

COMMIT;

BEGIN;

-- Running upgrade 6a1eb3d442e4 -> 43c94d4c7aa3

ALTER TABLE deployment ADD COLUMN pull_steps JSONB;

UPDATE alembic_version SET version_num='43c94d4c7aa3' WHERE alembic_version.version_num = '6a1eb3d442e4';

COMMIT;

BEGIN;

-- Running upgrade 43c94d4c7aa3 -> 310dda75f561

CREATE TABLE variable (
    id UUID DEFAULT (GEN_RANDOM_UUID()) NOT NULL, 
    created TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    updated TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    name VARCHAR NOT NULL, 
    value VARCHAR NOT NULL, 
    tags JSONB DEFAULT '[]' NOT NULL, 
    CONSTRAINT pk_variable PRIMARY KEY (id), 
    CONSTRAINT uq_variable__name UNIQUE (name)
);

CREATE INDEX ix_variable__updated ON variable (updated);

UPDATE alembic_version SET version_num='310dda75f561' WHERE alembic_version.version_num = '43c94d4c7aa3';

COMMIT;

-- (not rendered: revision 15f5083c16bd "Migrate artifact data to artifact_collection table" needs a database connection offline: AttributeError: 'NoneType' object has no attribute 'fetchall')

BEGIN;

-- Running upgrade 15f5083c16bd -> 5f623ddbf7fe

CREATE TABLE concurrency_limit_v2 (
    id UUID DEFAULT (GEN_RANDOM_UUID()) NOT NULL, 
    created TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    updated TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    active BOOLEAN NOT NULL, 
    name VARCHAR NOT NULL, 
    "limit" INTEGER NOT NULL, 
    active_slots INTEGER NOT NULL, 
    denied_slots INTEGER NOT NULL, 
    slot_decay_per_second FLOAT, 
    avg_slot_occupancy_seconds FLOAT NOT NULL, 
    CONSTRAINT pk_concurrency_limit_v2 PRIMARY KEY (id), 
    CONSTRAINT uq_concurrency_limit_v2__name UNIQUE (name)
);

CREATE INDEX ix_concurrency_limit_v2__updated ON concurrency_limit_v2 (updated);

UPDATE alembic_version SET version_num='5f623ddbf7fe' WHERE alembic_version.version_num = '15f5083c16bd';

COMMIT;

BEGIN;

-- Running upgrade 5f623ddbf7fe -> 50f8c182c3ca

ALTER TABLE worker ADD COLUMN heartbeat_interval_seconds INTEGER;

UPDATE alembic_version SET version_num='50f8c182c3ca' WHERE alembic_version.version_num = '5f623ddbf7fe';

COMMIT;

BEGIN;

-- Running upgrade 50f8c182c3ca -> db0eb3973a54

ALTER TABLE deployment ADD COLUMN enforce_parameter_schema BOOLEAN DEFAULT '0' NOT NULL;

UPDATE alembic_version SET version_num='db0eb3973a54' WHERE alembic_version.version_num = '50f8c182c3ca';

COMMIT;

BEGIN;

-- Running upgrade db0eb3973a54 -> 4e9a6f93eb6c

UPDATE concurrency_limit_v2 SET slot_decay_per_second = 0.0 WHERE slot_decay_per_second is null;

ALTER TABLE concurrency_limit_v2 ALTER COLUMN slot_decay_per_second SET NOT NULL;

UPDATE alembic_version SET version_num='4e9a6f93eb6c' WHERE alembic_version.version_num = 'db0eb3973a54';

COMMIT;

BEGIN;

-- Running upgrade 4e9a6f93eb6c -> 05ea6f882b1d

ALTER TABLE task_run ALTER COLUMN flow_run_id DROP NOT NULL;

ALTER TABLE log ALTER COLUMN flow_run_id DROP NOT NULL;

UPDATE alembic_version SET version_num='05ea6f882b1d' WHERE alembic_version.version_num = '4e9a6f93eb6c';

COMMIT;

BEGIN;

-- Running upgrade 05ea6f882b1d -> bfe653bbf62e

ALTER TABLE deployment ADD COLUMN last_polled TIMESTAMP WITH TIME ZONE;

UPDATE alembic_version SET version_num='bfe653bbf62e' WHERE alembic_version.version_num = '05ea6f882b1d';

COMMIT;

-- (not rendered: revision cef24af2ec34 "Add block_type_name to block document" needs a database connection offline: AttributeError: 'NoneType' object has no attribute 'rowcount')

BEGIN;

-- Running upgrade cef24af2ec34 -> 9c493c02ca6d

COMMIT;

CREATE INDEX CONCURRENTLY IF NOT EXISTS
            trgm_ix_block_document_name
            ON block_document USING gin (name gin_trgm_ops);;

BEGIN;

UPDATE alembic_version SET version_num='9c493c02ca6d' WHERE alembic_version.version_num = 'cef24af2ec34';

COMMIT;

BEGIN;

-- Running upgrade 9c493c02ca6d -> 733ca1903976

CREATE TABLE flow_run_input (
    id UUID DEFAULT (GEN_RANDOM_UUID()) NOT NULL, 
    created TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    updated TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    key VARCHAR NOT NULL, 
    value TEXT NOT NULL, 
    flow_run_id UUID NOT NULL, 
    CONSTRAINT pk_flow_run_input PRIMARY KEY (id), 
    CONSTRAINT uq_flow_run_input__flow_run_id_key UNIQUE (flow_run_id, key)
);

CREATE INDEX ix_flow_run_input__updated ON flow_run_input (updated);

UPDATE alembic_version SET version_num='733ca1903976' WHERE alembic_version.version_num = '9c493c02ca6d';

COMMIT;

BEGIN;

-- Running upgrade 733ca1903976 -> 7c453555d3a5

ALTER TABLE flow_run_input ADD CONSTRAINT fk_flow_run_input__flow_run_id__flow_run FOREIGN KEY(flow_run_id) REFERENCES flow_run (id) ON DELETE cascade;

UPDATE alembic_version SET version_num='7c453555d3a5' WHERE alembic_version.version_num = '733ca1903976';

COMMIT;

BEGIN;

-- Running upgrade 7c453555d3a5 -> 6b63c51c31b4

ALTER TABLE flow_run_input ADD COLUMN sender VARCHAR;

UPDATE alembic_version SET version_num='6b63c51c31b4' WHERE alembic_version.version_num = '7c453555d3a5';

COMMIT;

BEGIN;

-- Running upgrade 6b63c51c31b4 -> 8cf4d4933848

CREATE TABLE deployment_schedule (
    id UUID DEFAULT (GEN_RANDOM_UUID()) NOT NULL, 
    created TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    updated TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    schedule JSONB NOT NULL, 
    active BOOLEAN NOT NULL, 
    deployment_id UUID NOT NULL, 
    CONSTRAINT pk_deployment_schedule PRIMARY KEY (id), 
    CONSTRAINT fk_deployment_schedule__deployment_id__deployment FOREIGN KEY(deployment_id) REFERENCES deployment (id) ON DELETE CASCADE
);

CREATE INDEX ix_deployment_schedule__deployment_id ON deployment_schedule (deployment_id);

CREATE INDEX ix_deployment_schedule__updated ON deployment_schedule (updated);

ALTER TABLE deployment ADD COLUMN paused BOOLEAN DEFAULT '0' NOT NULL;

CREATE INDEX ix_deployment__paused ON deployment (paused);

INSERT INTO deployment_schedule (deployment_id, schedule, active)
        SELECT
            d.id AS deployment_id,
            d.schedule,
            d.is_schedule_active AS active
        FROM
            deployment d
        WHERE
            d.schedule IS NOT NULL
            and d.schedule != 'null';;

UPDATE deployment SET paused = NOT is_schedule_active where paused = is_schedule_active;;

UPDATE alembic_version SET version_num='8cf4d4933848' WHERE alembic_version.version_num = '6b63c51c31b4';

COMMIT;

BEGIN;

-- Running upgrade 8cf4d4933848 -> 121699507574

ALTER TABLE flow_run ADD COLUMN job_variables JSONB DEFAULT '{}';

UPDATE alembic_version SET version_num='121699507574' WHERE alembic_version.version_num = '8cf4d4933848';

COMMIT;

BEGIN;

-- Running upgrade 121699507574 -> 7a653837d9ba

CREATE TABLE csrf_token (
    token VARCHAR NOT NULL, 
    client VARCHAR NOT NULL, 
    expiration TIMESTAMP WITH TIME ZONE NOT NULL, 
    id UUID DEFAULT (GEN_RANDOM_UUID()) NOT NULL, 
    created TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    updated TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    CONSTRAINT pk_csrf_token PRIMARY KEY (id), 
    CONSTRAINT uq_csrf_token__client UNIQUE (client)
);

CREATE INDEX ix_csrf_token__updated ON csrf_token (updated);

UPDATE alembic_version SET version_num='7a653837d9ba' WHERE alembic_version.version_num = '121699507574';

COMMIT;

BEGIN;

-- Running upgrade 7a653837d9ba -> aeea5ee6f070

CREATE TABLE automation (
    name VARCHAR NOT NULL, 
    description VARCHAR NOT NULL, 
    enabled BOOLEAN DEFAULT '1' NOT NULL, 
    trigger JSONB NOT NULL, 
    actions JSONB NOT NULL, 
    actions_on_trigger JSONB DEFAULT '[]' NOT NULL, 
    actions_on_resolve JSONB DEFAULT '[]' NOT NULL, 
    id UUID DEFAULT (GEN_RANDOM_UUID()) NOT NULL, 
    created TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    updated TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    CONSTRAINT pk_automation PRIMARY KEY (id)
);

CREATE INDEX ix_automation__updated ON automation (updated);

CREATE TABLE automation_bucket (
    automation_id UUID NOT NULL, 
    trigger_id UUID, 
    bucketing_key JSONB NOT NULL, 
    last_event JSONB, 
    start TIMESTAMP WITH TIME ZONE NOT NULL, 
    "end" TIMESTAMP WITH TIME ZONE NOT NULL, 
    count INTEGER NOT NULL, 
    last_operation VARCHAR, 
    triggered_at TIMESTAMP WITH TIME ZONE NOT NULL, 
    id UUID DEFAULT (GEN_RANDOM_UUID()) NOT NULL, 
    created TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    updated TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    CONSTRAINT pk_automation_bucket PRIMARY KEY (id), 
    CONSTRAINT fk_automation_bucket__automation_id__automation FOREIGN KEY(automation_id) REFERENCES automation (id) ON DELETE CASCADE
);

CREATE INDEX ix_automation_bucket__automation_id__end ON automation_bucket (automation_id, "end");

CREATE INDEX ix_automation_bucket__updated ON automation_bucket (updated);

CREATE UNIQUE INDEX uq_automation_bucket__automation_id__bucketing_key ON automation_bucket (automation_id, bucketing_key);

CREATE TABLE automation_related_resource (
    automation_id UUID NOT NULL, 
    resource_id VARCHAR, 
    automation_owned_by_resource BOOLEAN DEFAULT '0' NOT NULL, 
    id UUID DEFAULT (GEN_RANDOM_UUID()) NOT NULL, 
    created TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    updated TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    CONSTRAINT pk_automation_related_resource PRIMARY KEY (id), 
    CONSTRAINT fk_automation_related_resource__automation_id__automation FOREIGN KEY(automation_id) REFERENCES automation (id) ON DELETE CASCADE
);

CREATE INDEX ix_automation_related_resource__resource_id ON automation_related_resource (resource_id);

CREATE INDEX ix_automation_related_resource__updated ON automation_related_resource (updated);

CREATE UNIQUE INDEX uq_automation_related_resource__automation_id__resource_id ON automation_related_resource (automation_id, resource_id);

CREATE TABLE composite_trigger_child_firing (
    automation_id UUID NOT NULL, 
    parent_trigger_id UUID NOT NULL, 
    child_trigger_id UUID NOT NULL, 
    child_firing_id UUID NOT NULL, 
    child_fired_at TIMESTAMP WITH TIME ZONE, 
    child_firing JSONB NOT NULL, 
    id UUID DEFAULT (GEN_RANDOM_UUID()) NOT NULL, 
    created TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    updated TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    CONSTRAINT pk_composite_trigger_child_firing PRIMARY KEY (id), 
    CONSTRAINT fk_composite_trigger_child_firing__automation_id__automation FOREIGN KEY(automation_id) REFERENCES automation (id) ON DELETE CASCADE
);

CREATE INDEX ix_composite_trigger_child_firing__updated ON composite_trigger_child_firing (updated);

CREATE UNIQUE INDEX uq_composite_trigger_child_firing__a_id__pt_id__ct__id ON composite_trigger_child_firing (automation_id, parent_trigger_id, child_trigger_id);

UPDATE alembic_version SET version_num='aeea5ee6f070' WHERE alembic_version.version_num = '7a653837d9ba';

COMMIT;

BEGIN;

-- Running upgrade aeea5ee6f070 -> bd6efa529f03

ALTER TABLE flow_run ADD COLUMN deployment_version VARCHAR;

CREATE INDEX ix_flow_run__deployment_version ON flow_run (deployment_version);

UPDATE alembic_version SET version_num='bd6efa529f03' WHERE alembic_version.version_num = 'aeea5ee6f070';

COMMIT;

BEGIN;

-- Running upgrade bd6efa529f03 -> 916718e8330f

CREATE TABLE automation_event_follower (
    leader_event_id UUID NOT NULL, 
    follower_event_id UUID NOT NULL, 
    received TIMESTAMP WITH TIME ZONE NOT NULL, 
    follower JSONB NOT NULL, 
    id UUID DEFAULT (GEN_RANDOM_UUID()) NOT NULL, 
    created TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    updated TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    CONSTRAINT pk_automation_event_follower PRIMARY KEY (id), 
    CONSTRAINT uq_automation_event_follower__follower_event_id UNIQUE (follower_event_id)
);

CREATE INDEX ix_automation_event_follower__leader_event_id ON automation_event_follower (leader_event_id);

CREATE INDEX ix_automation_event_follower__received ON automation_event_follower (received);

CREATE INDEX ix_automation_event_follower__updated ON automation_event_follower (updated);

UPDATE alembic_version SET version_num='916718e8330f' WHERE alembic_version.version_num = 'bd6efa529f03';

COMMIT;

BEGIN;

-- Running upgrade 916718e8330f -> 954db7517015

ALTER TABLE automation_bucket ALTER COLUMN trigger_id SET NOT NULL;

ALTER TABLE automation_bucket ALTER COLUMN triggered_at DROP NOT NULL;

DROP INDEX uq_automation_bucket__automation_id__bucketing_key;

CREATE UNIQUE INDEX uq_automation_bucket__automation_id__trigger_id__bucketing_key ON automation_bucket (automation_id, trigger_id, bucketing_key);

UPDATE alembic_version SET version_num='954db7517015' WHERE alembic_version.version_num = '916718e8330f';

COMMIT;

BEGIN;

-- Running upgrade 954db7517015 -> 15768c2ec702

CREATE TABLE event_resources (
    occurred TIMESTAMP WITH TIME ZONE NOT NULL, 
    resource_id TEXT NOT NULL, 
    resource_role TEXT NOT NULL, 
    resource JSON NOT NULL, 
    event_id UUID NOT NULL, 
    id UUID DEFAULT (GEN_RANDOM_UUID()) NOT NULL, 
    created TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    updated TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    CONSTRAINT pk_event_resources PRIMARY KEY (id)
);

CREATE INDEX ix_event_resources__resource_id__occurred ON event_resources (resource_id, occurred);

CREATE INDEX ix_event_resources__updated ON event_resources (updated);

CREATE TABLE events (
    occurred TIMESTAMP WITH TIME ZONE NOT NULL, 
    event TEXT NOT NULL, 
    resource_id TEXT NOT NULL, 
    resource JSONB NOT NULL, 
    related_resource_ids JSONB DEFAULT '[]' NOT NULL, 
    related JSONB DEFAULT '[]' NOT NULL, 
    payload JSONB NOT NULL, 
    received TIMESTAMP WITH TIME ZONE NOT NULL, 
    recorded TIMESTAMP WITH TIME ZONE NOT NULL, 
    follows UUID, 
    id UUID DEFAULT (GEN_RANDOM_UUID()) NOT NULL, 
    created TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    updated TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    CONSTRAINT pk_events PRIMARY KEY (id)
);

CREATE INDEX ix_events__event__id ON events (event, id);

CREATE INDEX ix_events__event_occurred_id ON events (event, occurred, id);

CREATE INDEX ix_events__event_related_occurred ON events (event, related, occurred);

CREATE INDEX ix_events__event_resource_id_occurred ON events (event, resource_id, occurred);

CREATE INDEX ix_events__occurred ON events (occurred);

CREATE INDEX ix_events__occurred_id ON events (occurred, id);

CREATE INDEX ix_events__related_resource_ids ON events (related_resource_ids);

CREATE INDEX ix_events__updated ON events (updated);

UPDATE alembic_version SET version_num='15768c2ec702' WHERE alembic_version.version_num = '954db7517015';

COMMIT;

BEGIN;

-- Running upgrade 15768c2ec702 -> 7ae9e431e67a

CREATE TYPE deployment_status AS ENUM ('READY', 'NOT_READY');

ALTER TABLE deployment ADD COLUMN status deployment_status DEFAULT 'NOT_READY' NOT NULL;

CREATE TYPE work_pool_status AS ENUM ('READY', 'NOT_READY', 'PAUSED');

ALTER TABLE work_pool ADD COLUMN status work_pool_status DEFAULT 'NOT_READY' NOT NULL;

CREATE TYPE work_queue_status AS ENUM ('READY', 'NOT_READY', 'PAUSED');

ALTER TABLE work_queue ADD COLUMN status work_queue_status DEFAULT 'NOT_READY' NOT NULL;

UPDATE alembic_version SET version_num='7ae9e431e67a' WHERE alembic_version.version_num = '15768c2ec702';

COMMIT;

BEGIN;

-- Running upgrade 7ae9e431e67a -> 8905262ec07f

ALTER TABLE work_pool ADD COLUMN last_transitioned_status_at TIMESTAMP WITH TIME ZONE;

ALTER TABLE work_pool ADD COLUMN last_status_event_id UUID;

CREATE TYPE worker_status AS ENUM ('ONLINE', 'OFFLINE');

ALTER TABLE worker ADD COLUMN status worker_status DEFAULT 'OFFLINE' NOT NULL;

UPDATE alembic_version SET version_num='8905262ec07f' WHERE alembic_version.version_num = '7ae9e431e67a';

COMMIT;

BEGIN;

-- Running upgrade 8905262ec07f -> b23c83a12cb4

ALTER TABLE deployment_schedule ADD COLUMN max_active_runs INTEGER;

ALTER TABLE deployment_schedule ADD COLUMN max_scheduled_runs INTEGER;

ALTER TABLE deployment_schedule ADD COLUMN catchup BOOLEAN DEFAULT '0' NOT NULL;

UPDATE alembic_version SET version_num='b23c83a12cb4' WHERE alembic_version.version_num = '8905262ec07f';

COMMIT;

-- (not rendered: revision 94622c1663e8 "json_variables" needs a database connection offline: AttributeError: 'NoneType' object has no attribute 'fetchall')

BEGIN;

-- Running upgrade 94622c1663e8 -> 7495a5013e7e

ALTER TABLE automation_event_follower ADD COLUMN scope VARCHAR NOT NULL;

ALTER TABLE automation_event_follower DROP CONSTRAINT uq_automation_event_follower__follower_event_id;

CREATE INDEX ix_automation_event_follower__scope ON automation_event_follower (scope);

CREATE UNIQUE INDEX uq_follower_for_scope ON automation_event_follower (scope, follower_event_id);

UPDATE alembic_version SET version_num='7495a5013e7e' WHERE alembic_version.version_num = '94622c1663e8';

COMMIT;

BEGIN;

-- Running upgrade 7495a5013e7e -> 97429116795e

ALTER TABLE deployment ADD COLUMN concurrency_limit INTEGER;

UPDATE alembic_version SET version_num='97429116795e' WHERE alembic_version.version_num = '7495a5013e7e';

COMMIT;

BEGIN;

-- Running upgrade 97429116795e -> 555ed31b284d

ALTER TABLE deployment ADD COLUMN concurrency_options JSONB;

UPDATE alembic_version SET version_num='555ed31b284d' WHERE alembic_version.version_num = '97429116795e';

COMMIT;

BEGIN;

-- Running upgrade 555ed31b284d -> eaec5004771f

ALTER TABLE deployment ADD COLUMN concurrency_limit_id UUID;

ALTER TABLE deployment ADD CONSTRAINT fk_deployment__concurrency_limit_id__concurrency_limit_v2 FOREIGN KEY(concurrency_limit_id) REFERENCES concurrency_limit_v2 (id) ON DELETE SET NULL;

WITH deployment_limit_mapping AS (
            SELECT d.id AS deployment_id, l.id AS limit_id
            FROM deployment d
            JOIN concurrency_limit_v2 l ON l.name = 'deployment:' || d.id::text
        )
        UPDATE deployment
        SET concurrency_limit_id = dlm.limit_id
        FROM deployment_limit_mapping dlm
        WHERE deployment.id = dlm.deployment_id;;

UPDATE alembic_version SET version_num='eaec5004771f' WHERE alembic_version.version_num = '555ed31b284d';

COMMIT;

BEGIN;

-- Running upgrade eaec5004771f -> 68a44144428d

ALTER TABLE deployment ADD COLUMN labels JSONB;

ALTER TABLE flow ADD COLUMN labels JSONB;

ALTER TABLE flow_run ADD COLUMN labels JSONB;

ALTER TABLE task_run ADD COLUMN labels JSONB;

UPDATE alembic_version SET version_num='68a44144428d' WHERE alembic_version.version_num = 'eaec5004771f';

COMMIT;

BEGIN;

-- Running upgrade 68a44144428d -> 5d03c01be85e

UPDATE artifact_collection SET latest_id=GEN_RANDOM_UUID() WHERE latest_id IS NULL;

ALTER TABLE artifact_collection ALTER COLUMN latest_id SET NOT NULL;

CREATE INDEX ix_artifact_collection__updated ON artifact_collection (updated);

ALTER TABLE deployment DROP COLUMN schedule;

ALTER TABLE deployment DROP COLUMN is_schedule_active;

ALTER TABLE deployment DROP COLUMN flow_data;

DROP INDEX ix_flow_run__deployment_id;

ALTER TABLE deployment DROP COLUMN manifest_path;

ALTER TABLE deployment_schedule DROP COLUMN catchup;

ALTER TABLE deployment_schedule DROP COLUMN max_active_runs;

UPDATE alembic_version SET version_num='5d03c01be85e' WHERE alembic_version.version_num = '68a44144428d';

COMMIT;

BEGIN;

-- Running upgrade 5d03c01be85e -> c163acd7e8e3

ALTER TABLE deployment_schedule ADD COLUMN parameters JSONB DEFAULT '{}' NOT NULL;

UPDATE alembic_version SET version_num='c163acd7e8e3' WHERE alembic_version.version_num = '5d03c01be85e';

COMMIT;

BEGIN;

-- Running upgrade c163acd7e8e3 -> a03d00b8e275

COMMIT;

ALTER TABLE deployment_schedule ADD COLUMN slug VARCHAR;

CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_deployment_schedule__slug
            ON deployment_schedule(slug);

CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS
            ix_deployment_schedule__deployment_id__slug
            ON deployment_schedule(deployment_id, slug)
            WHERE slug IS NOT NULL;;

BEGIN;

UPDATE alembic_version SET version_num='a03d00b8e275' WHERE alembic_version.version_num = 'c163acd7e8e3';

COMMIT;

BEGIN;

-- Running upgrade a03d00b8e275 -> b5f5644500d2

ALTER TABLE work_pool ADD COLUMN storage_configuration JSONB DEFAULT '{}' NOT NULL;

UPDATE alembic_version SET version_num='b5f5644500d2' WHERE alembic_version.version_num = 'a03d00b8e275';

COMMIT;

BEGIN;

-- Running upgrade b5f5644500d2 -> 06b7c293bc69

CREATE TABLE deployment_version (
    deployment_id UUID NOT NULL, 
    branch VARCHAR, 
    version_info JSONB DEFAULT '{}' NOT NULL, 
    description TEXT, 
    tags JSONB DEFAULT '[]' NOT NULL, 
    labels JSONB, 
    entrypoint VARCHAR, 
    pull_steps JSONB, 
    parameters JSONB DEFAULT '{}' NOT NULL, 
    parameter_openapi_schema JSONB, 
    enforce_parameter_schema BOOLEAN DEFAULT '0' NOT NULL, 
    work_queue_id UUID, 
    work_queue_name VARCHAR, 
    infra_overrides JSONB DEFAULT '{}' NOT NULL, 
    id UUID DEFAULT (GEN_RANDOM_UUID()) NOT NULL, 
    created TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    updated TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    CONSTRAINT pk_deployment_version PRIMARY KEY (id), 
    CONSTRAINT fk_deployment_version__deployment_id__deployment FOREIGN KEY(deployment_id) REFERENCES deployment (id) ON DELETE CASCADE, 
    CONSTRAINT fk_deployment_version__work_queue_id__work_queue FOREIGN KEY(work_queue_id) REFERENCES work_queue (id) ON DELETE SET NULL
);

CREATE INDEX ix_deployment_version__deployment_id ON deployment_version (deployment_id);

CREATE INDEX ix_deployment_version__updated ON deployment_version (updated);

CREATE INDEX ix_deployment_version__work_queue_id ON deployment_version (work_queue_id);

CREATE INDEX ix_deployment_version__work_queue_name ON deployment_version (work_queue_name);

CREATE UNIQUE INDEX uq_deployment_version__deployment__branch ON deployment_version (deployment_id, branch);

ALTER TABLE deployment ADD COLUMN version_id UUID;

CREATE INDEX ix_deployment__version_id ON deployment (version_id);

UPDATE alembic_version SET version_num='06b7c293bc69' WHERE alembic_version.version_num = 'b5f5644500d2';

COMMIT;

BEGIN;

-- Running upgrade 06b7c293bc69 -> 7a73514ca2d6

DROP INDEX ix_events__event_related_occurred;

DROP INDEX ix_events__related_resource_ids;

CREATE INDEX ix_events__related_gin ON events USING gin (related);

CREATE INDEX ix_events__event_occurred ON events (event, occurred);

CREATE INDEX ix_events__related_resource_ids_gin ON events USING gin (related_resource_ids);

UPDATE alembic_version SET version_num='7a73514ca2d6' WHERE alembic_version.version_num = '06b7c293bc69';

COMMIT;

-- (not rendered: revision 4160a4841eed "Remove flow run notifications" needs a database connection offline: AttributeError: 'NoneType' object has no attribute 'fetchall')

BEGIN;

-- Running upgrade 4160a4841eed -> 1c9bb7f78263

CREATE INDEX ix_ae_follower_scope_leader ON automation_event_follower (scope, leader_event_id);

UPDATE alembic_version SET version_num='1c9bb7f78263' WHERE alembic_version.version_num = '4160a4841eed';

COMMIT;

BEGIN;

-- Running upgrade 1c9bb7f78263 -> aa1234567890

ALTER TABLE automation ADD COLUMN tags JSONB DEFAULT '[]' NOT NULL;

UPDATE alembic_version SET version_num='aa1234567890' WHERE alembic_version.version_num = '1c9bb7f78263';

COMMIT;

BEGIN;

-- Running upgrade aa1234567890 -> 3b86c5ea017a

ALTER TABLE task_run DROP CONSTRAINT fk_task_run__state_id__task_run_state;

UPDATE alembic_version SET version_num='3b86c5ea017a' WHERE alembic_version.version_num = 'aa1234567890';

COMMIT;

-- (not rendered: revision 9e83011d1f2a "Migrate V1 concurrency limits to V2" needs a database connection offline: AttributeError: 'NoneType' object has no attribute 'fetchall')

BEGIN;

-- Running upgrade 9e83011d1f2a -> a1b2c3d4e5f6

COMMIT;

CREATE INDEX CONCURRENTLY IF NOT EXISTS
            ix_flow_run__schedule_id_scheduler
            ON flow_run (deployment_id, (created_by->>'id'), next_scheduled_start_time)
            WHERE state_type = 'SCHEDULED' AND auto_scheduled = true;;

BEGIN;

UPDATE alembic_version SET version_num='a1b2c3d4e5f6' WHERE alembic_version.version_num = '9e83011d1f2a';

COMMIT;

BEGIN;

-- Running upgrade a1b2c3d4e5f6 -> 09a9e091e578

COMMIT;

CREATE INDEX CONCURRENTLY IF NOT EXISTS
            ix_task_run__state_type_start_time
            ON task_run (state_type, start_time);

BEGIN;

UPDATE alembic_version SET version_num='09a9e091e578' WHERE alembic_version.version_num = 'a1b2c3d4e5f6';

COMMIT;

BEGIN;

-- Running upgrade 09a9e091e578 -> 7218aad17905

DELETE FROM block_document_reference
        WHERE parent_block_document_id = reference_block_document_id;

ALTER TABLE block_document_reference ADD CONSTRAINT ck_block_document_reference__ck_block_document_referenc_824f CHECK (parent_block_document_id != reference_block_document_id);

UPDATE alembic_version SET version_num='7218aad17905' WHERE alembic_version.version_num = '09a9e091e578';

COMMIT;

BEGIN;

-- Running upgrade 7218aad17905 -> bad1e352c597

COMMIT;

CREATE INDEX CONCURRENTLY IF NOT EXISTS
            ix_event_resources__occurred
            ON event_resources (occurred);

BEGIN;

UPDATE alembic_version SET version_num='bad1e352c597' WHERE alembic_version.version_num = '7218aad17905';

COMMIT;

BEGIN;

-- Running upgrade bad1e352c597 -> 50737cdaee36

COMMIT;

CREATE INDEX CONCURRENTLY IF NOT EXISTS
            ix_event_resources__event_id
            ON event_resources (event_id);

BEGIN;

UPDATE alembic_version SET version_num='50737cdaee36' WHERE alembic_version.version_num = 'bad1e352c597';

COMMIT;

BEGIN;

-- Running upgrade 50737cdaee36 -> 9e9dadc36797

COMMIT;

CREATE INDEX CONCURRENTLY IF NOT EXISTS
            ix_flow_run__deployment_id
            ON flow_run (deployment_id);

BEGIN;

UPDATE alembic_version SET version_num='9e9dadc36797' WHERE alembic_version.version_num = '50737cdaee36';

COMMIT;

-- (not rendered: revision c8d5f2a71b3e "Rebuild an invalid event_resources(occurred) index" needs a database connection offline: RuntimeError: c8d5f2a71b3e requires an online PostgreSQL migration)

-- (not rendered: revision d4a7e1c93f52 "Add index on flow_run(state_type, coalesce(start_time, expected_start_time))" needs a database connection offline: RuntimeError: d4a7e1c93f52 requires an online PostgreSQL migration)

BEGIN;

-- Running upgrade d4a7e1c93f52 -> e7f54680bce3

CREATE TABLE automation_held_event (
    automation_id UUID NOT NULL, 
    trigger_id UUID NOT NULL, 
    bucketing_key JSONB DEFAULT '[]' NOT NULL, 
    event_id UUID NOT NULL, 
    occurred TIMESTAMP WITH TIME ZONE NOT NULL, 
    id UUID DEFAULT (GEN_RANDOM_UUID()) NOT NULL, 
    created TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    updated TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
    CONSTRAINT pk_automation_held_event PRIMARY KEY (id), 
    CONSTRAINT fk_automation_held_event__automation_id__automation FOREIGN KEY(automation_id) REFERENCES automation (id) ON DELETE CASCADE
);

CREATE UNIQUE INDEX uq_automation_held_event__trigger_key_event ON automation_held_event (automation_id, trigger_id, bucketing_key, event_id);

CREATE INDEX ix_automation_held_event__trigger_key_occurred ON automation_held_event (automation_id, trigger_id, bucketing_key, occurred, event_id);

CREATE INDEX ix_automation_held_event__updated ON automation_held_event (updated);

UPDATE alembic_version SET version_num='e7f54680bce3' WHERE alembic_version.version_num = 'd4a7e1c93f52';

COMMIT;

BEGIN;

-- Running upgrade e7f54680bce3 -> 91e2b8f3d6a4

UPDATE alembic_version SET version_num='91e2b8f3d6a4' WHERE alembic_version.version_num = 'e7f54680bce3';

COMMIT;
