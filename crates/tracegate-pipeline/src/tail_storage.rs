//! Where the tail sampler's `tail_storage` finds its storage: a started
//! storage extension, named by id.

use crate::config::ComponentError;
use crate::context::BuildContext;
use crate::processor::tail_sampling::journal::JournalPlace;

/// The journal place for processor `processor` in the storage extension
/// `storage`.
pub fn journal_place(
    storage: &str,
    _processor: &str,
    _ctx: &BuildContext,
) -> Result<JournalPlace, ComponentError> {
    Err(ComponentError {
        path: "tail_storage".into(),
        message: format!("storage {storage:?} is not a started storage extension"),
    })
}
