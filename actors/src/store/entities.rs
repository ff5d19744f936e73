//! sea-orm entities, one module per table of `migrations`; converted to domain types by hand.

pub mod tasks {
    //! The `tasks` table.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "tasks")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub task_id: String,
        pub user: String,
        pub title: String,
        pub spec: String,
        pub priority: String,
        pub requirements: String,
        pub state: String,
        pub agent_id: Option<String>,
        pub result: Option<String>,
        pub error: Option<String>,
        pub created_at: i64,
        pub updated_at: i64,
        pub contracts: String,
        pub require_plan_approval: bool,
        pub preferred_agent: Option<String>,
        pub attempts: i32,
        pub max_attempts: i32,
        pub inputs: String,
        pub blocked_reason: Option<String>,
        pub note: Option<String>,
        pub generation: i32,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod task_dependencies {
    //! The `task_dependencies` table.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "task_dependencies")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub task_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub depends_on: String,
        pub kind: String,
        pub contract_key: Option<String>,
        pub state: String,
        pub reason: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod agents {
    //! The `agents` table.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "agents")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub agent_id: String,
        pub user: String,
        pub name: String,
        pub capabilities: String,
        pub max_concurrent: i32,
        pub status: String,
        pub last_heartbeat: i64,
        pub registered_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod notifications {
    //! The `notifications` table: an outbox of notifications to deliver.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "notifications")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub user: String,
        pub channel: String,
        pub recipient: String,
        pub subject: String,
        pub text: String,
        #[sea_orm(unique)]
        pub dedupe_key: String,
        pub status: String,
        pub cause: String,
        pub created_at: i64,
        pub task_id: Option<String>,
        pub attempts: i32,
        pub due_at: i64,
        pub lease_until: i64,
        pub last_error: Option<String>,
        pub sent_at: Option<i64>,
        pub destination: Option<String>,
        pub provider_ref: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod processed_messages {
    //! The `processed_messages` table: ids of applied messages, for idempotency.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "processed_messages")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub message_id: String,
        pub processed_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod api_keys {
    //! The `api_keys` table: hashes of bearer keys and whom they stand for.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "api_keys")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub key_hash: String,
        pub user: String,
        pub role: String,
        pub agent_id: Option<String>,
        pub created_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod activity {
    //! The `activity` table: one row per message applied to an entity, with no unique key.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "activity")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub entity: String,
        pub message_id: String,
        pub kind: String,
        pub at: i64,
        pub user: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod cluster_members {
    //! The `cluster_members` table: each node, the partitions it owns, when last heard of.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "cluster_members")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub node_id: String,
        pub instance: String,
        pub http: String,
        pub grpc: String,
        pub partitions: String,
        pub started_at: i64,
        pub seen_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod assignments {
    //! The `assignments` table: the orchestrator's decisions, one per task and generation.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "assignments")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub task_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub generation: i32,
        pub agent_id: String,
        pub decided_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod refusals {
    //! The `refusals` table: why the domain refused a message, for the caller waiting on it.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "refusals")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub message_id: String,
        pub reason: String,
        pub at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod replay_checkpoints {
    //! The `replay_checkpoints` table: where a resumed replay goes on from, per partition.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "replay_checkpoints")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub topic: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub partition: i32,
        pub next_offset: i64,
        pub started_from: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod task_output {
    //! The `task_output` table: lines a worker printed while on a task.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "task_output")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub task_id: String,
        pub agent_id: String,
        pub line: String,
        pub at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod conversations {
    //! The `conversations` table: what each conversation's mailbox knows.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "conversations")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub key: String,
        pub channel: String,
        pub conversation: String,
        pub messages: i64,
        pub tasks: i64,
        pub first_at: i64,
        pub last_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod conversation_messages {
    //! The `conversation_messages` table: each inbound message, and the task it became.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "conversation_messages")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub message_id: String,
        pub key: String,
        pub sender: String,
        pub text: String,
        pub provider_id: String,
        pub received: i64,
        pub attachments: String,
        pub task_id: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod calendar_requests {
    //! The `calendar_requests` table: every request decided per calendar; the booked ones are
    //! its bookings.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "calendar_requests")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub calendar_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub request_id: String,
        pub user: String,
        pub title: String,
        pub start: i64,
        pub end: i64,
        pub booked: bool,
        pub conflicts_with: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod invocations {
    //! The `invocations` table: every model invocation recorded, once per user and id.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "invocations")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub user: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub invocation_id: String,
        pub provider: String,
        pub model: String,
        pub tokens_in: i64,
        pub tokens_out: i64,
        pub cost_micros: i64,
        pub latency_ms: i64,
        pub task_id: Option<String>,
        pub at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod cost_ledgers {
    //! The `cost_ledgers` table: each user's totals of the current periods, budgets set at
    //! run time, and the hold on their model tasks.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "cost_ledgers")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub user: String,
        pub day: i64,
        pub month: i64,
        pub daily_micros: i64,
        pub monthly_micros: i64,
        pub daily_budget: Option<i64>,
        pub monthly_budget: Option<i64>,
        pub hold_reason: Option<String>,
        pub hold_until: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod automations {
    //! The `automations` table: each automation's schedule, policy, task template (JSON),
    //! next due time (none while paused) and last run.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "automations")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub automation_id: String,
        pub user: String,
        pub schedule: String,
        pub time_zone: String,
        pub missed: String,
        pub tasks: String,
        pub paused: bool,
        pub next_run_at: Option<i64>,
        pub last_run: Option<String>,
        pub last_run_at: Option<i64>,
        pub defined_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
