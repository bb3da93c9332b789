//! Client proxies of the contract in dbus/org.example.Copyd1.xml. The test
//! `introspection_matches_contract` keeps the daemon and the XML in step;
//! these are checked against the daemon by the end-to-end tests.

use std::collections::HashMap;

use zbus::{OwnedObjectPath, OwnedVariant, Variant};

#[zbus::proxy(
    interface = "org.example.Copyd1.Manager",
    default_service = "org.example.Copyd1",
    default_path = "/org/example/Copyd1"
)]
pub trait Manager {
    fn copy(
        &self,
        sources: &[&[u8]],
        destination: &[u8],
        options: HashMap<&str, Variant<'_>>,
    ) -> zbus::Result<OwnedObjectPath>;

    #[zbus(name = "Move")]
    fn move_(
        &self,
        sources: &[&[u8]],
        destination: &[u8],
        options: HashMap<&str, Variant<'_>>,
    ) -> zbus::Result<OwnedObjectPath>;

    fn plan(
        &self,
        sources: &[&[u8]],
        destination: &[u8],
        options: HashMap<&str, Variant<'_>>,
    ) -> zbus::Result<HashMap<String, OwnedVariant>>;

    fn list_jobs(&self) -> zbus::Result<Vec<OwnedObjectPath>>;

    fn get_job(&self, id: &str) -> zbus::Result<OwnedObjectPath>;

    fn retry_job(
        &self,
        id: &str,
        options: HashMap<&str, Variant<'_>>,
    ) -> zbus::Result<OwnedObjectPath>;

    #[zbus(property)]
    fn version(&self) -> zbus::Result<String>;

    #[zbus(property)]
    fn engines(&self) -> zbus::Result<Vec<String>>;
}

#[zbus::proxy(
    interface = "org.example.Copyd1.Job",
    default_service = "org.example.Copyd1"
)]
pub trait Job {
    fn cancel(&self, options: HashMap<&str, Variant<'_>>) -> zbus::Result<()>;
    fn pause(&self, options: HashMap<&str, Variant<'_>>) -> zbus::Result<()>;
    fn resume(&self, options: HashMap<&str, Variant<'_>>) -> zbus::Result<()>;
    fn set_rate_limit(&self, bytes_per_second: u64) -> zbus::Result<()>;
    fn resolve_conflict(&self, action: &str, apply_to_all: bool) -> zbus::Result<()>;

    #[zbus(signal)]
    fn conflict_raised(
        &self,
        target: Vec<u8>,
        existing: HashMap<String, OwnedVariant>,
        incoming: HashMap<String, OwnedVariant>,
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    fn progress(
        &self,
        bytes_done: u64,
        bytes_total: u64,
        files_done: u64,
        files_total: u64,
        rate: u64,
        expected_end_time: u64,
    ) -> zbus::Result<()>;

    /// Files the job placed (a job made with report-files; the owner's
    /// only): action, directory, source, target.
    #[zbus(signal)]
    fn files_placed(&self, files: Vec<(String, bool, Vec<u8>, Vec<u8>)>) -> zbus::Result<()>;

    #[zbus(signal)]
    fn completed(&self, success: bool, error_name: String, message: String) -> zbus::Result<()>;

    /// The source path being copied now (the owner's only).
    #[zbus(property)]
    fn current_path(&self) -> zbus::Result<Vec<u8>>;
}
