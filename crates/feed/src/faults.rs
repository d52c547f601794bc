//! Fault injection under a store: a [`Backend`] over the real file that fails writes, fsyncs
//! or file growth (a full disk) while told to, so that applications (and this project's
//! tests) can check what their code does when the disk fails.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use redb::StorageBackend;
use redb::backends::FileBackend;

use crate::options::Backend;

/// A fault to inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Fault {
    /// Everything works.
    None = 0,
    /// Every fsync fails.
    FailSync = 1,
    /// Every write fails.
    FailWrite = 2,
    /// Growing the file or writing fails with "storage full".
    DiskFull = 3,
}

/// Switches faults on and off for every database opened through [`Faults::backend`].
#[derive(Clone, Debug, Default)]
pub struct Faults(Arc<AtomicU8>);

impl Faults {
    /// No fault yet.
    pub fn new() -> Self {
        Faults::default()
    }

    /// Injects `fault` from now on (`Fault::None` stops injecting).
    pub fn set(&self, fault: Fault) {
        self.0.store(fault as u8, Ordering::SeqCst);
    }

    /// The backend to pass to [`crate::Options::backend`].
    pub fn backend(&self) -> Backend {
        let faults = self.clone();
        Backend(Arc::new(move |path: &Path| {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)?;
            let file = FileBackend::new(file).map_err(std::io::Error::other)?;
            Ok(Box::new(Faulty {
                file,
                faults: faults.clone(),
            }))
        }))
    }

    /// Fails as an operation that `when` affects would fail now: `Err` when `when` is the
    /// fault being injected. For code that writes its own files beside a database (a blob
    /// store's files), so that one `Faults` breaks both.
    pub fn check(&self, when: Fault) -> std::io::Result<()> {
        match self.0.load(Ordering::SeqCst) {
            f if f == when as u8 && when == Fault::DiskFull => {
                Err(std::io::ErrorKind::StorageFull.into())
            }
            f if f == when as u8 => Err(std::io::Error::other("injected fault")),
            _ => Ok(()),
        }
    }
}

#[derive(Debug)]
struct Faulty {
    file: FileBackend,
    faults: Faults,
}

impl StorageBackend for Faulty {
    fn len(&self) -> std::io::Result<u64> {
        self.file.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.file.read(offset, out)
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        if len > self.file.len()? {
            self.faults.check(Fault::DiskFull)?;
        }
        self.file.set_len(len)
    }

    fn sync_data(&self) -> std::io::Result<()> {
        self.faults.check(Fault::FailSync)?;
        self.file.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.faults.check(Fault::FailWrite)?;
        self.faults.check(Fault::DiskFull)?;
        self.file.write(offset, data)
    }
}
