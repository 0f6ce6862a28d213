//! Verification SOP Class SCP: C-ECHO (PS3.4 Annex A, PS3.7 9.1.5).
//!
//! Answers 0x0000 on a Verification presentation context and 0x0122 (SOP class not supported)
//! on any other; a data set wrongly attached to the request is read and discarded.

use crate::association::Association;
use crate::error::Result;
use crate::message::{Command, sop_class, status};

/// Answers one C-ECHO-RQ.
pub(crate) async fn handle(assoc: &mut Association, pc: u8, cmd: &Command) -> Result<()> {
    if cmd.has_data_set() {
        assoc.drain_data_set(pc).await?;
    }
    let ok = assoc
        .context(pc)
        .is_some_and(|c| c.abstract_syntax == sop_class::VERIFICATION);
    let st = if ok {
        status::SUCCESS
    } else {
        status::SOP_CLASS_NOT_SUPPORTED
    };
    assoc
        .send_message(pc, &Command::response_to(cmd, st), None)
        .await
}
