//! Whether `geonetc run` is one rank of an MPI job, and joining it.
//!
//! MPI launchers leave their marks in the environment: `mpirun`/`mpiexec` of Open MPI
//! (`OMPI_COMM_WORLD_SIZE`), MPICH's Hydra (`PMI_RANK`, `MPI_LOCALNRANKS`) and Slurm's `srun`
//! with PMI-2 or PMIx (`PMI_RANK`, `PMIX_RANK`). A batch script's own shell has Slurm's
//! variables but none of these, so it trains alone. Reading the environment is a CLI concern;
//! the runtime only sees a [`Collective`].

use geonetc::runtime::distributed::{Collective, SingleProcess};
use std::process::ExitCode;
use std::rc::Rc;

const LAUNCHER_VARS: &[&str] = &["OMPI_COMM_WORLD_SIZE", "PMI_RANK", "PMIX_RANK", "MPI_LOCALNRANKS"];

/// The processes this run trains with.
pub struct Cluster {
    pub collective: Rc<dyn Collective>,
    #[cfg(feature = "mpi")]
    mpi: Option<(mpi::environment::Universe, Rc<geonetc::runtime::distributed_mpi::MpiCollective>)>,
}

fn launched_by_mpi() -> bool {
    LAUNCHER_VARS.iter().any(|v| std::env::var_os(v).is_some())
}

/// The job's size as the launcher announces it, when it does.
fn announced_size() -> Option<usize> {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_NTASKS"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse().ok())
}

impl Cluster {
    /// Joins the MPI job this process was launched in, or trains alone.
    pub fn join() -> Result<Cluster, ExitCode> {
        #[cfg(feature = "mpi")]
        if launched_by_mpi() {
            let Some(universe) = mpi::initialize() else {
                return Err(super::fail("cannot initialise MPI (was it initialised twice?)"));
            };
            let world = Rc::new(geonetc::runtime::distributed_mpi::MpiCollective::new(universe.world()));
            let collective: Rc<dyn Collective> = world.clone();
            return Ok(Cluster { collective, mpi: Some((universe, world)) });
        }
        #[cfg(not(feature = "mpi"))]
        if launched_by_mpi() && announced_size().is_some_and(|n| n > 1) {
            return Err(super::fail(
                "this geonetc was built without MPI, so each of the launched processes would train alone on all the data; build it with `cargo build --release --features mpi`",
            ));
        }
        let _ = announced_size;
        Ok(Cluster {
            collective: Rc::new(SingleProcess),
            #[cfg(feature = "mpi")]
            mpi: None,
        })
    }

    pub fn is_root(&self) -> bool {
        self.collective.rank() == 0
    }

    /// Ends the run after an error on this rank: with other ranks, the whole job (they may be
    /// waiting for this one in a collective); alone, by returning `code`.
    pub fn fail(&self, message: &str, code: u8) -> ExitCode {
        if self.collective.size() > 1 {
            eprintln!("error (rank {} of {}): {message}", self.collective.rank(), self.collective.size());
            #[cfg(feature = "mpi")]
            if let Some((_, world)) = &self.mpi {
                world.abort(code as i32);
            }
        } else {
            eprintln!("error: {message}");
        }
        ExitCode::from(code)
    }
}
