//! The compiled plan in words, one block per node: what the JIT will do, without running it.
//! The plan snapshot tests read this, so a change in kernels, fusions or buffer sizes shows up
//! as a reviewed diff.

use super::codegen::{Epilogue, Geometry};
use super::linear::{LinearKind, Src};
use super::{JitModel, Step};
use crate::ops::Op;
use crate::ops::activation::{self, Activation};
use std::fmt::Write;

fn geometry(g: &Geometry) -> String {
    format!(
        "{}x{} from {}x{}, k {}x{} s {}x{} d {}x{}, ci {} (cs {}) -> co4 {} (cs {})",
        g.ho, g.wo, g.hp, g.wp, g.k[0], g.k[1], g.s[0], g.s[1], g.d[0], g.d[1], g.ci, g.csx, g.co4, g.cso
    )
}

fn epilogue(e: Epilogue) -> String {
    const RELU: &str = activation::RELU.name;
    let leaky = Op::Activation(Activation::LeakyRelu { slope: 0.0 });
    let leaky = leaky.kind();
    match e {
        Epilogue::None => String::new(),
        Epilogue::Relu => format!(", then {RELU}"),
        Epilogue::LeakyRelu(s) => format!(", then {leaky} {s}"),
        Epilogue::ReluMask => format!(", times {RELU}' of the mask"),
        Epilogue::LeakyMask(s) => format!(", times {leaky}' {s} of the mask"),
        Epilogue::Sigmoid | Epilogue::Tanh | Epilogue::SigmoidMask | Epilogue::TanhMask => {
            let a = if matches!(e, Epilogue::Sigmoid | Epilogue::SigmoidMask) {
                Activation::Sigmoid
            } else {
                Activation::Tanh
            };
            let name = Op::Activation(a).kind();
            if matches!(e, Epilogue::Sigmoid | Epilogue::Tanh) {
                format!(", then {name}")
            } else {
                format!(", times {name}' of the mask")
            }
        }
    }
}

fn source(s: Src) -> String {
    match s {
        Src::Value => "the value".into(),
        Src::Scratch(k) => format!("scratch {k}"),
    }
}

impl JitModel {
    /// This model's plan in words, as [`JitModel::describe_plan`] gives it for the default
    /// options.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for ((node, state), value_len) in
            self.executed.nodes().iter().zip(&self.nodes).zip(&self.buffers.value_len)
        {
            let l = state.layout;
            let _ = writeln!(
                out,
                "{} {} ({}): {}; layout {}x{}x{}x{} (cs {}), value {} floats, gradient buffer {}",
                node.id,
                node.name,
                node.op.kind(),
                state.step.label(),
                l.n,
                l.h,
                l.w,
                l.c,
                l.cs,
                value_len,
                state.grad_slot
            );
            let f = &state.fusion;
            let mut notes = vec![];
            if let Some(a) = f.activation {
                notes.push(format!("computes {a} in its kernel"));
            }
            if let Some(p) = f.into_linear {
                notes.push(format!("computed by {p}"));
            }
            if f.mask_folded {
                notes.push("derivative applied by its consumer's input-gradient kernel".into());
            }
            if let Some((c, off)) = f.concat_in_place {
                notes.push(format!("writes into {c} at channel {off}"));
            }
            if let Some(b) = f.bn_fold {
                match self.nodes[b.index()].fusion.activation {
                    Some(a) => notes.push(format!("folds {b} and {a} at inference")),
                    None => notes.push(format!("folds {b} at inference")),
                }
            }
            if let (Some(b), Step::Linear(l)) = (f.stats_into, &state.step)
                && l.stats.is_some()
            {
                notes.push(format!("sums {b}'s training statistics as it stores"));
            }
            if let (Some(b), Step::Linear(l)) = (f.grad_stats_into, &state.step)
                && l.grad_stats.is_some()
            {
                notes.push(format!("sums {b}'s backward sums as it stores its input gradient"));
            }
            if let (Some(b), Step::Linear(l)) = (f.norm_on_load, &state.step)
                && let Some(nm) = l.norm_load
            {
                let act = if nm.act == Epilogue::None { "" } else { " and activates" };
                notes.push(format!(
                    "in training normalises{act} {b}'s input as it loads it (forward and weight gradient)"
                ));
            }
            if let Some(p) = f.bn_folded_from {
                notes.push(format!("folded into {p} at inference"));
            }
            if !notes.is_empty() {
                let _ = writeln!(out, "    {}", notes.join("; "));
            }
            if let Step::Norm(p) = &state.step {
                let sums = |c: Option<crate::ir::NodeId>, grad: bool| {
                    c.is_some_and(|c| match &self.nodes[c.index()].step {
                        Step::Linear(l) => {
                            if grad {
                                l.grad_stats.is_some()
                            } else {
                                l.stats.is_some()
                            }
                        }
                        _ => false,
                    })
                };
                let fused = (sums(f.stats_from, false), sums(f.grad_stats_from, true));
                let _ = writeln!(out, "    {}", p.describe(fused, self.consumer_normalises(node.id)));
            }
            if let Step::Elementwise(p) = &state.step {
                let _ = writeln!(out, "    {}", p.describe());
            }
            if let Step::GroupNorm(p) = &state.step {
                let _ = writeln!(out, "    {}", p.describe());
            }
            if let Step::Unary(p) = &state.step {
                let _ = writeln!(out, "    {}", p.describe());
            }
            if let Step::Spatial(p) = &state.step {
                let _ = writeln!(out, "    {}", p.describe());
            }
            let Step::Linear(p) = &state.step else { continue };
            let kind = match p.kind {
                LinearKind::Direct => "direct",
                LinearKind::Transposed => "transposed (interleaved)",
                LinearKind::PixelShuffle(_) => "pixel shuffle",
            };
            let _ = writeln!(out, "    {kind}, weight {}x{}x{} taps, bias {}", p.a, p.b, p.taps, p.bias);
            let scatter = |s: Option<(usize, super::native::Scatter)>| match s {
                Some((k, sc)) => format!(
                    ", scattered into scratch {k} at stride {}x{} offset {}x{}",
                    sc.s[0], sc.s[1], sc.off[0], sc.off[1]
                ),
                None => String::new(),
            };
            let algorithm = |w: &Option<super::winograd::WinoCall>, geo: &Geometry| match w {
                Some(w) => format!("{} (direct: {})", w.spec.describe(), geometry(geo)),
                None => format!("corr {}", geometry(geo)),
            };
            let _ = writeln!(
                out,
                "    forward: {}{}{}{}; reads {}{}; {} rows",
                algorithm(&p.wino_fwd, &p.fwd.spec.geo),
                if p.fwd.spec.bias { ", bias" } else { "" },
                epilogue(p.fwd.spec.epilogue),
                match p.fwd.spec.shuffle {
                    Some(sh) => format!(
                        ", stored shuffled: {}x{} taps of {} lanes into rows {} wide (cs {})",
                        sh.k[0], sh.k[1], sh.lanes, sh.wy, sh.cs
                    ),
                    None => String::new(),
                },
                source(p.fwd_src),
                scatter(p.fwd_scatter),
                p.fwd_rows
            );
            let _ = writeln!(
                out,
                "    input gradient: {}{}; reads {}{}; {} rows",
                algorithm(&p.wino_bwd, &p.bwd_in.spec.geo),
                epilogue(p.bwd_in.spec.epilogue),
                source(p.bwd_src),
                scatter(p.bwd_scatter),
                p.bwd_rows
            );
            match &p.wino_gradw {
                Some(w) => {
                    let _ = writeln!(
                        out,
                        "    weight gradient: {}{} (direct: {}); x from {}; scratch {}",
                        w.describe(),
                        if p.gradw_spec.bias { ", bias sums" } else { "" },
                        geometry(&p.gradw_spec.geo),
                        source(p.gradw_x),
                        w.scratch
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        "    weight gradient: {}{}; x from {}{}{}; {} rows in chunks of {}",
                        geometry(&p.gradw_spec.geo),
                        if p.gradw_spec.bias { ", bias sums" } else { "" },
                        source(p.gradw_x),
                        match p.gradw_spec.pad {
                            [0, 0] => String::new(),
                            [a, b] => format!(" in place, padding {a}x{b} skipped"),
                        },
                        match p.gradw_scatter {
                            Some(_) => format!("{} in the backward pass", scatter(p.gradw_scatter)),
                            None => String::new(),
                        },
                        p.gradw_rows,
                        p.gradw_chunk_rows
                    );
                }
            }
            let scratch: Vec<String> = p
                .scratch_len
                .iter()
                .zip(&p.scratch_persistent)
                .map(|(l, &keep)| format!("{l}{}", if keep { " kept" } else { "" }))
                .collect();
            let _ = writeln!(
                out,
                "    scratch [{}], partial sums {}, packed weights and bias {} floats",
                scratch.join(", "),
                p.partials_len,
                p.packed_len()
            );
        }
        let grads: Vec<String> = self.buffers.grad_len.iter().map(|l| l.to_string()).collect();
        let _ = writeln!(out, "gradient buffers: [{}]", grads.join(", "));
        let _ = writeln!(out, "memory_bytes: {}", self.memory_bytes);
        out
    }
}
