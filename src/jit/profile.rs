//! Where the time goes: per node and direction, the loss and the optimizer's update (the parts
//! of a training step that belong to no node), and how much of it is inside generated kernels
//! (the rest is native loops, data movement around the kernels, and the reference code). On
//! when the model is compiled with `JitOptions::profile` (`geonetc bench --profile`).

use super::exec::{BACKWARD, FORWARD};
use super::{JitModel, NodeState, Step};
use crate::ir::{Graph, NodeId};
use serde::Serialize;
use std::fmt;
use std::time::Instant;

/// One node's times, in seconds summed over every pass since compiling.
#[derive(Clone, Debug, Serialize)]
pub struct NodeProfile {
    pub name: String,
    /// The op's name in the language.
    pub op: &'static str,
    /// `kernels` (generated code), `fused` (inside the kernels of the node before it),
    /// `native` (a native loop) or `reference` (the interpreter's code on converted copies).
    pub step: &'static str,
    /// Linear nodes: the forward, input-gradient and weight-gradient algorithms (`direct` or
    /// the Winograd tile, as `forward / input gradient / weight gradient`); empty otherwise.
    pub conv: String,
    pub forward_s: f64,
    pub backward_s: f64,
    /// The part of `forward_s` / `backward_s` spent in generated kernels.
    pub kernel_forward_s: f64,
    pub kernel_backward_s: f64,
}

/// A part of the training step that belongs to no node: the loss (and its output gradient)
/// and the optimizer's update, so the profile's total is the whole step's.
#[derive(Clone, Debug, Serialize)]
pub struct StepPartProfile {
    pub name: &'static str,
    /// Seconds summed over `passes` calls.
    pub seconds: f64,
    /// The part of `seconds` spent in generated kernels.
    pub kernel_s: f64,
    pub passes: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct Profile {
    pub nodes: Vec<NodeProfile>,
    pub forward_passes: usize,
    pub backward_passes: usize,
    /// `loss` (timed by the JIT) and `optimizer` (timed by whoever runs it: `bench`).
    pub step_parts: Vec<StepPartProfile>,
    /// Seconds of whole forward and backward passes: beyond the nodes' times, the work between
    /// them (the parameter gradients' allocation, the executor's loop).
    pub pass_forward_s: f64,
    pub pass_backward_s: f64,
}

impl Profile {
    pub(crate) fn new(graph: &Graph, nodes: &[NodeState]) -> Profile {
        let nodes = graph
            .nodes()
            .iter()
            .zip(nodes)
            .map(|(n, s)| NodeProfile {
                name: n.name.clone(),
                op: n.op.kind(),
                step: s.step.label(),
                conv: match &s.step {
                    Step::Linear(p) => p.algorithms(),
                    _ => String::new(),
                },
                forward_s: 0.0,
                backward_s: 0.0,
                kernel_forward_s: 0.0,
                kernel_backward_s: 0.0,
            })
            .collect();
        let step_parts = [LOSS, OPTIMIZER]
            .iter()
            .map(|&name| StepPartProfile { name, seconds: 0.0, kernel_s: 0.0, passes: 0 })
            .collect();
        Profile {
            nodes,
            forward_passes: 0,
            backward_passes: 0,
            step_parts,
            pass_forward_s: 0.0,
            pass_backward_s: 0.0,
        }
    }

    /// Seconds of the passes outside every node's step, forward and backward.
    pub fn between_nodes_s(&self) -> (f64, f64) {
        let fwd: f64 = self.nodes.iter().map(|n| n.forward_s).sum();
        let bwd: f64 = self.nodes.iter().map(|n| n.backward_s).sum();
        ((self.pass_forward_s - fwd).max(0.0), (self.pass_backward_s - bwd).max(0.0))
    }

    /// Seconds of every step (nodes, the work between them, loss, optimizer), and of those
    /// inside generated kernels.
    pub fn total_s(&self) -> f64 {
        let parts: f64 = self.step_parts.iter().map(|p| p.seconds).sum();
        let (between_fwd, between_bwd) = self.between_nodes_s();
        self.nodes.iter().map(|n| n.forward_s + n.backward_s).sum::<f64>() + between_fwd + between_bwd + parts
    }

    pub fn kernel_s(&self) -> f64 {
        let parts: f64 = self.step_parts.iter().map(|p| p.kernel_s).sum();
        self.nodes.iter().map(|n| n.kernel_forward_s + n.kernel_backward_s).sum::<f64>() + parts
    }

    /// Adds one call of the step part `name` (`LOSS` or `OPTIMIZER`): `seconds` in all,
    /// `kernel_s` of them in generated kernels.
    pub fn add_step_part(&mut self, name: &str, seconds: f64, kernel_s: f64) {
        if let Some(p) = self.step_parts.iter_mut().find(|p| p.name == name) {
            p.seconds += seconds;
            p.kernel_s += kernel_s;
            p.passes += 1;
        }
    }

    /// The share of the time spent outside generated kernels (0 to 1).
    pub fn outside_kernels(&self) -> f64 {
        let total = self.total_s();
        if total > 0.0 { 1.0 - self.kernel_s() / total } else { 0.0 }
    }
}

/// A table of the mean milliseconds per pass of every node, reference steps marked, then the
/// loss and the optimizer (per call), and the share of all of it outside generated kernels.
impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let per = |s: f64, passes: usize| if passes == 0 { 0.0 } else { s * 1e3 / passes as f64 };
        let (nf, nb) = (self.forward_passes, self.backward_passes);
        writeln!(f, "per node, mean ms over {nf} forward and {nb} backward passes:")?;
        writeln!(
            f,
            "{:>28} {:>10} {:>9} {:>9} {:>9} {:>10}",
            "node", "op", "step", "fwd ms", "bwd ms", "in kernels"
        )?;
        for n in &self.nodes {
            let total = n.forward_s + n.backward_s;
            let kernels = n.kernel_forward_s + n.kernel_backward_s;
            let share = if total > 0.0 { format!("{:.0} %", 100.0 * kernels / total) } else { "-".into() };
            let mark = if n.step == "reference" { "  <- reference code".to_string() } else { String::new() };
            let mark = if n.conv.is_empty() { mark } else { format!("  {}{mark}", n.conv) };
            writeln!(
                f,
                "{:>28} {:>10} {:>9} {:>9.2} {:>9.2} {:>10}{mark}",
                n.name,
                n.op,
                n.step,
                per(n.forward_s, nf),
                per(n.backward_s, nb),
                share
            )?;
        }
        let (fwd, bwd): (f64, f64) =
            (self.nodes.iter().map(|n| n.forward_s).sum(), self.nodes.iter().map(|n| n.backward_s).sum());
        writeln!(f, "{:>28} {:>10} {:>9} {:>9.2} {:>9.2}", "all nodes", "", "", per(fwd, nf), per(bwd, nb))?;
        let (between_fwd, between_bwd) = self.between_nodes_s();
        writeln!(
            f,
            "{:>28} {:>10} {:>9} {:>9.2} {:>9.2} {:>10}",
            "(between nodes)",
            "",
            "native",
            per(between_fwd, nf),
            per(between_bwd, nb),
            "0 %"
        )?;
        // Not a node's: the loss with its output gradient, and the optimizer (its ms in the
        // backward column, per call).
        for p in &self.step_parts {
            let step = if p.kernel_s > 0.0 { "kernels" } else { "native" };
            let share =
                if p.seconds > 0.0 { format!("{:.0} %", 100.0 * p.kernel_s / p.seconds) } else { "-".into() };
            writeln!(
                f,
                "{:>28} {:>10} {:>9} {:>9} {:>9.2} {:>10}",
                format!("({})", p.name),
                "",
                step,
                "-",
                per(p.seconds, p.passes),
                share
            )?;
        }
        write!(f, "{:.1} % of the time outside generated kernels", 100.0 * self.outside_kernels())
    }
}

/// The step parts' names.
pub const LOSS: &str = "loss";
pub const OPTIMIZER: &str = "optimizer";

impl JitModel {
    /// Adds one call of the step part `name` to the profile (when profiling): the optimizer's
    /// update is timed by its caller, which runs it outside the JIT.
    pub fn profile_step_part(&mut self, name: &str, seconds: f64, kernel_s: f64) {
        if let Some(p) = self.profile.as_mut() {
            p.add_step_part(name, seconds, kernel_s);
        }
    }

    /// Adds the time since `started` to node `id`'s step in direction `dir`.
    pub(crate) fn profile_step(&mut self, id: NodeId, dir: usize, started: Instant) {
        if let Some(p) = self.profile.as_mut() {
            let n = &mut p.nodes[id.index()];
            let s = started.elapsed().as_secs_f64();
            if dir == FORWARD { n.forward_s += s } else { n.backward_s += s }
        }
    }

    /// Adds `seconds` of generated-kernel time to node `id` in direction `dir`.
    pub(crate) fn profile_kernel(&mut self, id: NodeId, dir: usize, seconds: f64) {
        if let Some(p) = self.profile.as_mut() {
            let n = &mut p.nodes[id.index()];
            if dir == FORWARD { n.kernel_forward_s += seconds } else { n.kernel_backward_s += seconds }
        }
    }

    /// Counts one finished pass in direction `dir`, started at `started`.
    pub(crate) fn profile_pass(&mut self, dir: usize, started: Instant) {
        if let Some(p) = self.profile.as_mut() {
            let s = started.elapsed().as_secs_f64();
            match dir {
                BACKWARD => {
                    p.backward_passes += 1;
                    p.pass_backward_s += s;
                }
                _ => {
                    p.forward_passes += 1;
                    p.pass_forward_s += s;
                }
            }
        }
    }
}
