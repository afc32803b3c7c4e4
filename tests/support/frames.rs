//! Reading a segment file the way an auditor would, without the store: where
//! each frame starts and how long it is.

use std::path::Path;

use hookledger::store::embedded::{FRAME_HEADER_LEN, SEGMENT_HEADER_LEN};

/// Each frame of `segment` as (offset, length). The file may go on in zeros
/// the writer allocated ahead; nothing else may follow the last frame.
pub fn frames(segment: &Path) -> Vec<(u64, u64)> {
    let bytes = std::fs::read(segment).unwrap();
    let mut frames = Vec::new();
    let mut at = SEGMENT_HEADER_LEN as usize;
    while at < bytes.len() {
        // The top bit marks a frame whose batch goes on in the next one, the
        // next a frame that holds content after its archive.
        let len = (u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) & !(3 << 30)) as u64;
        if len == 0 {
            break;
        }
        frames.push((at as u64, FRAME_HEADER_LEN + len));
        at += (FRAME_HEADER_LEN + len) as usize;
    }
    assert!(
        bytes[at.min(bytes.len())..].iter().all(|&b| b == 0),
        "after the last frame, only zeros allocated ahead of the writes"
    );
    frames
}
