//! The `config` noun: one file per verb group.

mod backup;
mod check;
mod init;
mod lock;
mod manage;
pub mod schema;
mod set;
mod show;
mod token;

pub use backup::{backup as archive, restore};
pub use check::check;
pub use init::init;
pub use lock::lock;
pub use manage::{
    plugin_add, plugin_list, plugin_remove, route_add, route_list, route_remove, webhook_add,
    webhook_list, webhook_remove,
};
pub use set::set;
pub use show::{get, show};
pub use token::{
    create as token_create, list as token_list, revoke as token_revoke, scope_list, scope_set,
};
