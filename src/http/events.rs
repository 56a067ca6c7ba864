//! `GET /events`: the live event stream. Until the event ledger lands, every
//! request is answered 503 so clients know to retry later.

use std::path::PathBuf;

/// The event streams (none yet).
#[derive(Clone, Debug)]
pub struct Hub;

/// An accepted stream request.
pub struct StreamRequest;

impl Hub {
    /// A hub for the ledger at `db`.
    pub fn start(
        _db: PathBuf,
        _sync: crate::config::Synchronous,
        _max_streams: usize,
    ) -> Result<Hub, crate::store::StoreError> {
        Ok(Hub)
    }

    /// New rows were committed.
    pub fn notify(&self) {}

    /// Refuses: no stream can be served yet.
    pub fn open(&self, _last_event_id: Option<&str>) -> Result<StreamRequest, (u16, String)> {
        Err((503, "live events are not available yet".into()))
    }

    /// Serves an accepted stream.
    pub fn serve(&self, rq: tiny_http::Request, _stream: StreamRequest) {
        super::Reply::error(503, "live events are not available yet").send(rq);
    }

    /// Ends every stream.
    pub fn stop(&self) {}
}
