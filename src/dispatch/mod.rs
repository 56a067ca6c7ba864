//! Dispatch: who runs next, and the execution of one claimed job.
