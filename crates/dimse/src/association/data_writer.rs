//! Streaming a data set as P-DATA-TF PDUs (PS3.8 9.3.5) without holding it whole.

use super::Association;
use crate::error::Result;

/// Streams one data set as P-DATA PDUs; the last PDV is flagged by [`DataWriter::finish`].
pub struct DataWriter<'a> {
    pub(super) assoc: &'a mut Association,
    pub(super) pc: u8,
    /// 12 header bytes (PDU header + PDV header) followed by up to `cap` data bytes.
    pub(super) buf: Vec<u8>,
    pub(super) cap: usize,
}

impl DataWriter<'_> {
    /// Appends bytes, sending full PDUs as they fill. A PDU is only sent once more data is
    /// known to follow, so `finish` always has bytes to flag as last.
    pub async fn write(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            if self.buf.len() - 12 == self.cap {
                self.flush(false).await?;
            }
            let room = self.cap - (self.buf.len() - 12);
            let n = room.min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
        Ok(())
    }

    async fn flush(&mut self, last: bool) -> Result<()> {
        let n = self.buf.len() - 12;
        self.buf[0] = 0x04;
        self.buf[1] = 0;
        self.buf[2..6].copy_from_slice(&((n + 6) as u32).to_be_bytes());
        self.buf[6..10].copy_from_slice(&((n + 2) as u32).to_be_bytes());
        self.buf[10] = self.pc;
        self.buf[11] = if last { 0x02 } else { 0x00 };
        let buf = std::mem::take(&mut self.buf);
        let r = self.assoc.write_all(&buf).await;
        self.buf = buf;
        self.buf.truncate(12);
        r
    }

    /// Sends what is buffered as the last fragment of the data set.
    pub async fn finish(mut self) -> Result<()> {
        self.flush(true).await
    }
}
