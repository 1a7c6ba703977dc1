//! What every request handler shares: the configuration, the store, the
//! metrics and the caches. Data only: what is done with it lives in modules
//! named for the job (`lookup.rs`, `signing.rs`, `nar/`), each field in the
//! module of the same name.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use larder_store::StoreLocation;
use larder_store::db::StoreDb;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::nar::nar_cache::NarCache;
use crate::nar::plan_cache::PlanCache;
use crate::path_info_memo::PathInfoMemo;
use crate::signer_client::SignerClient;
use crate::view::Views;

/// Built once at startup (`startup::app_state`) and shared by every worker.
pub struct AppState {
    pub config: Config,
    /// Where the store is: the store dir clients see, and where its files
    /// really are.
    pub location: StoreLocation,
    /// The store's DB, read-only.
    pub db: StoreDb,
    pub metrics: Arc<Metrics>,
    /// The compressed-NAR cache, when `cache-dir` is set.
    pub nar_cache: Option<Arc<NarCache>>,
    /// Recent DB answers for narinfo and listing requests.
    pub path_info_memo: PathInfoMemo,
    /// NAR layouts of recently served paths.
    pub plan_cache: PlanCache,
    /// The client of larder-signer, when `signer-socket` is set.
    pub signer_client: Option<Arc<SignerClient>>,
    /// Set once SIGTERM or SIGINT arrived (`server.rs`): running downloads
    /// finish, and `/health` tells load balancers to send nothing new.
    pub draining: AtomicBool,
    /// The views requests are placed in (`view/select.rs`); one view of
    /// the whole store when none is configured.
    pub views: Arc<Views>,
}
