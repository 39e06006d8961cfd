//! Cranelift code generation: the two kernel families every linear layer (conv, upconv, dense,
//! their gradients) is lowered to, specialised on every size as a constant.
//!
//! Both work on NHWC f32 buffers (`[N, H, W, C]`, channels innermost with a channel stride ≥ C,
//! a multiple of 4 for outputs), read either already padded or in place with the padding known
//! at generation time (`pad`: taps outside are skipped or read a zero row, decided by constants
//! and one compare per tap row — docs/jit.md, "Padding without copies"):
//!
//! - [`CorrSpec`] — a strided, dilated cross-correlation with bias and a fused epilogue:
//!   `y[n,oh,ow,co] = act(b[co] + Σ_{ci,kh,kw} x[n, oh·s₀+kh·d₀, ow·s₁+kw·d₁, ci] · w[ci,kh,kw,co])`.
//!   The forward pass of conv and dense, the input-gradient of conv and dense, and upconv are all
//!   this with different buffers and weight packings.
//! - [`GradWSpec`] — the weight gradient `dw[ci,kh,kw,co] = Σ_{n,oh,ow} x[…, ci] · dy[n,oh,ow,co]`
//!   over a range of output rows (the caller reduces fixed row chunks in a fixed order, so results
//!   do not depend on the thread count).
//!
//! The micro-kernel is register-blocked: `R` output positions × `V` vectors of 4 output channels
//! held in f32x4 accumulators, one scalar broadcast per position and one weight vector per block
//! per tap, fused multiply-adds. Taps are unrolled; every address offset inside the reduction
//! loop is a constant displacement from two pointers.

use super::linear_emit::{emit_corr, emit_gradw};
use cranelift_codegen::control::ControlPlane;
use cranelift_codegen::ir::Function;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{AbiParam, InstBuilder, MemFlagsData, Type, Value, types};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{FuncId, Linkage, Module, ModuleReloc, default_libcall_names};

/// What happens to each accumulator before it is stored.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Epilogue {
    #[default]
    None,
    Relu,
    LeakyRelu(f32),
    /// Multiply by the derivative of a relu whose output is the buffer passed as `m`
    /// (same layout as `y`): the backward pass of `conv -> relu` folded into the grad-input loop.
    ReluMask,
    /// Same for leaky_relu with slope `a`.
    LeakyMask(f32),
    /// sigmoid and tanh of the accumulator ([`super::exp`], inline).
    Sigmoid,
    Tanh,
    /// Multiply by the derivative of a sigmoid (`m(1 − m)`) or tanh (`1 − m²`) whose output is
    /// the buffer `m`.
    SigmoidMask,
    TanhMask,
}

impl Epilogue {
    /// Whether the epilogue reads the buffer `m` (an activation's output).
    pub fn reads_mask(self) -> bool {
        matches!(
            self,
            Epilogue::ReluMask | Epilogue::LeakyMask(_) | Epilogue::SigmoidMask | Epilogue::TanhMask
        )
    }
}

/// The geometry both kernel families share: a window of `k` taps at stride `s` and dilation
/// `d` slid over an already padded NHWC buffer of `hp × wp` positions with `ci` channels (stride
/// `csx`), one result per output position `ho × wo` and per output lane (`co4` lanes, stride
/// `cso` in the buffer indexed by output position).
#[derive(Clone, Debug, PartialEq)]
pub struct Geometry {
    /// Output height and width.
    pub ho: usize,
    pub wo: usize,
    /// Input buffer height and width (already padded).
    pub hp: usize,
    pub wp: usize,
    pub k: [usize; 2],
    pub s: [usize; 2],
    pub d: [usize; 2],
    /// Input channels reduced over, and the input buffer's channel stride.
    pub ci: usize,
    pub csx: usize,
    /// Output channels rounded up to 4, and the channel stride (≥ co4) of the buffer indexed by
    /// output position: `y` of a correlation, `dy` of a weight gradient.
    pub co4: usize,
    pub cso: usize,
}

impl Geometry {
    /// A 1×1 correlation over `positions` positions of one row: the per-point products of a
    /// Winograd layer (`V · U` forward, `Vᵀ · Ŷ` for its weight gradient) as a GEMM.
    pub(crate) fn gemm(positions: usize, ci: usize, csx: usize, co4: usize) -> Geometry {
        Geometry {
            ho: 1,
            wo: positions,
            hp: 1,
            wp: positions,
            k: [1, 1],
            s: [1, 1],
            d: [1, 1],
            ci,
            csx,
            co4,
            cso: co4,
        }
    }

    /// Floats of a weight (or weight gradient) packed as `[ci][tap][co4]`.
    pub fn weight_len(&self) -> usize {
        self.ci * self.k[0] * self.k[1] * self.co4
    }
}

/// A cross-correlation kernel, fully specialised.
#[derive(Clone, Debug, PartialEq)]
pub struct CorrSpec {
    pub geo: Geometry,
    pub bias: bool,
    pub epilogue: Epilogue,
    /// Zero rows and columns around `x` the kernel knows of instead of reading them (`x` read in
    /// place, `(hp − 2·pad₀) × (wp − 2·pad₁)` positions per sample): a tap row outside reads a
    /// zeroed row on the stack, and the output positions near the left and right edges skip
    /// the tap columns outside. `[0, 0]`: `x` is already padded.
    pub pad: [usize; 2],
    /// Output positions scattered as a pixel-shuffle upconv's (`None`: position `p`'s lanes at
    /// `p·cso`, rows `wo·cso` apart).
    pub shuffle: Option<Shuffle>,
}

/// The store of a pixel-shuffle upconv (kernel = stride `k`, no padding), fused into its 1×1
/// correlation: the lanes of input position `(n, h, w)` are `k₀·k₁` taps of `lanes` channels,
/// and tap `(kh, kw)`'s go to output position `(n, h·k₀ + kh, w·k₁ + kw)` of a buffer `wy`
/// positions wide with channel stride `cs` — so the output is written once, in place, with no
/// depth-to-space copy after the kernel.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Shuffle {
    pub k: [usize; 2],
    /// Output channels rounded to 4: lanes per tap.
    pub lanes: usize,
    /// The output buffer's width and channel stride.
    pub wy: usize,
    pub cs: usize,
}

impl Shuffle {
    /// Bytes from one input row's outputs to the next's: `k₀` output rows.
    pub(crate) fn row_bytes(&self) -> i64 {
        (self.k[0] * self.wy * self.cs * 4) as i64
    }

    /// Floats from one input position's outputs to the next's along a row.
    pub(crate) fn pos_stride(&self) -> usize {
        self.k[1] * self.cs
    }

    /// Bytes from an input position's first output to tap `t`'s.
    pub(crate) fn tap_bytes(&self, t: usize) -> i64 {
        let (kh, kw) = (t / self.k[1], t % self.k[1]);
        ((kh * self.wy + kw) * self.cs * 4) as i64
    }
}

/// Largest zero row (bytes, on the stack of the calling thread) a correlation reading its input
/// in place may use; wider rows are padded by a copy instead.
pub(crate) const MAX_ZERO_ROW_BYTES: usize = 64 << 10;

impl CorrSpec {
    /// Floats of `y` (and of the mask `m`) the kernel reaches over rows `0..rows`, from its
    /// first output lane: up to the last position's last group of lanes.
    pub(crate) fn y_len(&self, rows: usize) -> usize {
        let g = &self.geo;
        if rows == 0 {
            return 0;
        }
        match self.shuffle {
            None => (rows * g.wo - 1) * g.cso + g.co4,
            Some(sh) => {
                let taps = sh.k[0] * sh.k[1];
                let last = (rows - 1) as i64 * sh.row_bytes() / 4 + ((g.wo - 1) * sh.pos_stride()) as i64;
                last as usize + sh.tap_bytes(taps - 1) as usize / 4 + sh.lanes
            }
        }
    }

    /// Whether some output row has a tap row outside `x` (read in place).
    pub(crate) fn rows_outside(&self) -> bool {
        let g = &self.geo;
        let hs = (g.hp - 2 * self.pad[0]) as i64;
        (0..g.k[0]).any(|kh| {
            let first = (kh * g.d[0]) as i64 - self.pad[0] as i64;
            first < 0 || ((g.ho - 1) * g.s[0]) as i64 + first >= hs
        })
    }

    /// Bytes of the zero row a kernel reading `x` in place keeps on the stack: the input
    /// columns one output row's taps span (none when no tap row is ever outside, e.g. 1-D).
    pub(crate) fn zero_row_bytes(&self) -> usize {
        let g = &self.geo;
        if !self.rows_outside() {
            return 0;
        }
        ((g.wo - 1) * g.s[1] + (g.k[1] - 1) * g.d[1] + 1) * g.csx * 4
    }
}

/// A weight-gradient kernel, fully specialised.
#[derive(Clone, Debug, PartialEq)]
pub struct GradWSpec {
    pub geo: Geometry,
    /// Also sum `dy` per channel (the bias gradient) into `co4` f64 values stored from
    /// `dw[ci·taps·co4]` on (2·co4 f32 slots), in the same pass over the rows.
    pub bias: bool,
    /// Zero rows and columns around `x` that the kernel knows of instead of reading them: `x`
    /// is read in place, `(hp − 2·pad₀) × (wp − 2·pad₁)` positions per sample, and each tap sums
    /// only the positions whose input lies inside. `[0, 0]`: `x` is already padded (`hp × wp`).
    pub pad: [usize; 2],
}

impl GradWSpec {
    /// Floats the kernel accumulates into per row chunk: the weight, then the f64 bias sums.
    pub fn partial_len(&self) -> usize {
        self.geo.weight_len() + if self.bias { 2 * self.geo.co4 } else { 0 }
    }
}

/// `fn(x, w, b, y, m, row0, row1)`: rows are `n·ho + oh`.
pub type CorrFn = unsafe extern "C" fn(*const f32, *const f32, *const f32, *mut f32, *const f32, i64, i64);
/// `fn(x, dy, dw, row0, row1)`: adds the sum over rows `row0..row1` into `dw`.
pub type GradWFn = unsafe extern "C" fn(*const f32, *const f32, *mut f32, i64, i64);

/// Register blocking: positions × 4-channel vectors held in accumulators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blocking {
    pub r: usize,
    pub v: usize,
}

impl Blocking {
    /// Largest accepted `r` and `v`: past these the unrolled tiles only spill registers and the
    /// generated code grows without bound.
    pub const MAX: usize = 16;

    /// A blocking of `r` positions × `v` vectors, each in `1..=MAX`.
    pub fn new(r: usize, v: usize) -> Result<Blocking, String> {
        if !(1..=Self::MAX).contains(&r) || !(1..=Self::MAX).contains(&v) {
            return Err(format!("register blocking {r}x{v}: each factor must be 1 to {}", Self::MAX));
        }
        Ok(Blocking { r, v })
    }

    /// Parses `RxV` (e.g. `5x2`).
    pub fn parse(text: &str) -> Result<Blocking, String> {
        let bad = || format!("register blocking `{text}`: expected RxV, e.g. 5x2");
        let (r, v) = text.split_once('x').ok_or_else(bad)?;
        Blocking::new(r.trim().parse().map_err(|_| bad())?, v.trim().parse().map_err(|_| bad())?)
    }
}

/// Cranelift's `opt_level`. `None` is the default: on our kernels it is faster than `Speed`
/// (measured in ARCHITECTURE.md), whose register allocation spills the accumulators.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OptLevel {
    #[default]
    None,
    Speed,
    SpeedAndSize,
}

impl OptLevel {
    /// Cranelift's name of the level.
    pub fn name(self) -> &'static str {
        match self {
            OptLevel::None => "none",
            OptLevel::Speed => "speed",
            OptLevel::SpeedAndSize => "speed_and_size",
        }
    }

    pub fn parse(text: &str) -> Result<OptLevel, String> {
        [OptLevel::None, OptLevel::Speed, OptLevel::SpeedAndSize]
            .into_iter()
            .find(|l| l.name() == text)
            .ok_or_else(|| format!("opt level `{text}`: expected none, speed or speed_and_size"))
    }
}

pub const CORR_BLOCKING: Blocking = Blocking { r: 5, v: 2 };
pub const GRADW_BLOCKING: Blocking = Blocking { r: 4, v: 2 };

/// Owns the JIT module (and so the machine code) of one compiled model.
pub struct Codegen {
    module: JITModule,
    ctx: cranelift_codegen::Context,
    fctx: FunctionBuilderContext,
    has_fma: bool,
    count: usize,
    /// Plan only: no code is generated (for sizing buffers, e.g. `check`'s `memory_bytes`).
    dry: bool,
    /// The correlation and weight-gradient kernels generated so far, by their spec and blocking
    /// (`Debug` text: the specs hold an f32 slope, so they are not `Hash`). Layers of the same
    /// sizes (a DnCNN's repeated blocks, a forward and an input gradient of the same shape, the
    /// per-point products of Winograd layers) share one function: compile time grows with the
    /// distinct shapes, not the layers.
    kernels: std::collections::HashMap<String, FnHandle>,
    /// Functions built but not yet compiled: [`Codegen::finish`] compiles them all at once, in
    /// parallel (compile time is most of a model's start-up, and functions are independent).
    pending: Vec<(FuncId, Function)>,
    /// The key of the function [`Codegen::cached`] is generating: part of its symbol name, so
    /// `perf record` (cranelift-jit writes `/tmp/perf-<pid>.map` under perf) names each kernel.
    generating: Option<String>,
}

// SAFETY: the JIT module is only used behind `&mut` while compiling; once finished, the code
// it owns is immutable and only read (called) through plain function pointers.
unsafe impl Send for Codegen {}
// SAFETY: as for `Send`: a `&Codegen` gives no way to mutate the module.
unsafe impl Sync for Codegen {}

/// One function's machine code: its id, alignment, bytes and relocations.
type Compiled = (FuncId, u64, Vec<u8>, Vec<ModuleReloc>);

/// Handle of a function that becomes callable after [`Codegen::finish`].
#[derive(Clone, Copy, Debug)]
pub struct FnHandle(FuncId);

pub(crate) const PTR: Type = types::I64;
pub(crate) const F32X4: Type = types::F32X4;

pub(crate) fn flags() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

impl Codegen {
    /// A code generator for this machine at Cranelift's `opt_level` `opt`.
    pub fn new(opt: OptLevel) -> Result<Codegen, String> {
        let mut fb = settings::builder();
        fb.set("opt_level", opt.name()).map_err(|e| e.to_string())?;
        fb.set("is_pic", "false").map_err(|e| e.to_string())?;
        fb.set("use_colocated_libcalls", "false").map_err(|e| e.to_string())?;
        // The IR verifier is a sixth of compile time; debug builds (every test) keep it.
        let verify = if cfg!(debug_assertions) { "true" } else { "false" };
        fb.set("enable_verifier", verify).map_err(|e| e.to_string())?;
        let isa_builder = cranelift_native::builder().map_err(|e| format!("unsupported host: {e}"))?;
        let isa = isa_builder.finish(settings::Flags::new(fb)).map_err(|e| e.to_string())?;
        let has_fma = isa.isa_flags().iter().any(|f| f.name == "has_fma" && f.as_bool() == Some(true));
        let module = JITModule::new(JITBuilder::with_isa(isa, default_libcall_names()));
        let ctx = module.make_context();
        Ok(Codegen {
            module,
            ctx,
            fctx: FunctionBuilderContext::new(),
            has_fma,
            count: 0,
            dry: false,
            kernels: Default::default(),
            pending: Vec::new(),
            generating: None,
        })
    }

    /// A code generator that plans but emits nothing; its functions must not be called.
    pub fn dry() -> Result<Codegen, String> {
        let mut cg = Codegen::new(OptLevel::None)?;
        cg.dry = true;
        Ok(cg)
    }

    fn declare(&mut self, n_ptrs: usize) -> Result<(FuncId, cranelift_codegen::ir::Signature), String> {
        let mut sig = self.module.make_signature();
        for _ in 0..n_ptrs + 2 {
            sig.params.push(AbiParam::new(PTR));
        }
        let name = match self.generating.take() {
            Some(key) => format!("k{} {key}", self.count),
            None => format!("k{}", self.count),
        };
        self.count += 1;
        let id = self.module.declare_function(&name, Linkage::Local, &sig).map_err(|e| e.to_string())?;
        Ok((id, sig))
    }

    /// Takes the function built in `self.ctx` for compiling at [`Codegen::finish`].
    fn define(&mut self, id: FuncId) -> Result<FnHandle, String> {
        let func = std::mem::replace(&mut self.ctx.func, Function::new());
        self.module.clear_context(&mut self.ctx);
        self.pending.push((id, func));
        Ok(FnHandle(id))
    }

    pub fn is_dry(&self) -> bool {
        self.dry
    }

    /// Compiles every function defined since the last call — on all threads, each with its own
    /// context (Cranelift compiles a function without reference to any other) — then defines
    /// them in their order of definition and makes them callable. The machine code does not
    /// depend on the thread count: each function's code is a function of its IR alone.
    pub fn finish(&mut self) -> Result<(), String> {
        use rayon::prelude::*;
        if self.dry {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        let isa = self.module.isa();
        let compiled: Vec<Result<Compiled, String>> = pending
            .into_par_iter()
            .map(|(id, func)| {
                let mut ctx = cranelift_codegen::Context::for_function(func);
                ctx.compile(isa, &mut ControlPlane::default())
                    .map_err(|e| format!("cranelift: {:?}", e.inner))?;
                let code = ctx.compiled_code().ok_or("cranelift: no code after compiling")?;
                let alignment = u64::from(code.buffer.alignment);
                let bytes = code.code_buffer().to_vec();
                let relocs: Vec<ModuleReloc> = code
                    .buffer
                    .relocs()
                    .iter()
                    .map(|r| ModuleReloc::from_mach_reloc(r, &ctx.func, id))
                    .collect();
                Ok((id, alignment, bytes, relocs))
            })
            .collect();
        for c in compiled {
            let (id, alignment, bytes, relocs) = c?;
            self.module
                .define_function_bytes(id, alignment, &bytes, &relocs)
                .map_err(|e| format!("cranelift: {e:?}"))?;
        }
        self.module.finalize_definitions().map_err(|e| e.to_string())
    }

    pub fn corr_fn(&self, h: FnHandle) -> CorrFn {
        let p = self.module.get_finalized_function(h.0);
        // SAFETY: the function was generated with exactly this signature.
        unsafe { std::mem::transmute::<*const u8, CorrFn>(p) }
    }

    pub fn gradw_fn(&self, h: FnHandle) -> GradWFn {
        let p = self.module.get_finalized_function(h.0);
        // SAFETY: the function was generated with exactly this signature.
        unsafe { std::mem::transmute::<*const u8, GradWFn>(p) }
    }

    /// The weight-gradient finish generated by [`super::gradw_finish::GradWFinish::generate`].
    pub(crate) fn finish_fn(&self, h: FnHandle) -> super::gradw_finish::FinishFn {
        let p = self.fn_address(h);
        // SAFETY: the function was generated with exactly this signature.
        unsafe { std::mem::transmute::<*const u8, super::gradw_finish::FinishFn>(p) }
    }

    /// Generates a cross-correlation kernel.
    pub fn corr(&mut self, spec: &CorrSpec, blk: Blocking) -> Result<FnHandle, String> {
        if self.dry {
            return Ok(FnHandle(FuncId::from_u32(0)));
        }
        self.cached(format!("corr {spec:?} {blk:?}"), |cg| cg.corr_new(spec, blk))
    }

    /// The function generated for `key` before, or `generate`'s, remembered under `key`.
    pub(crate) fn cached(
        &mut self,
        key: String,
        generate: impl FnOnce(&mut Codegen) -> Result<FnHandle, String>,
    ) -> Result<FnHandle, String> {
        if let Some(&h) = self.kernels.get(&key) {
            return Ok(h);
        }
        self.generating = Some(key.chars().take(160).collect());
        let h = generate(self);
        self.generating = None;
        let h = h?;
        self.kernels.insert(key, h);
        Ok(h)
    }

    fn corr_new(&mut self, spec: &CorrSpec, blk: Blocking) -> Result<FnHandle, String> {
        let (id, sig) = self.declare(5)?;
        self.ctx.func.signature = sig;
        let has_fma = self.has_fma;
        let target = self.module.target_config();
        let mut b = FunctionBuilder::new(&mut self.ctx.func, &mut self.fctx);
        emit_corr(&mut b, spec, blk, has_fma);
        b.seal_all_blocks();
        b.finalize(target);
        self.define(id)
    }

    /// The Cranelift IR (CLIF) text of the correlation kernel of `spec` as it is handed to the
    /// code generator on a host with FMA (so the text does not depend on the machine); nothing
    /// is compiled or defined.
    pub fn corr_clif(&mut self, spec: &CorrSpec, blk: Blocking) -> String {
        let mut sig = self.module.make_signature();
        sig.params.extend((0..7).map(|_| AbiParam::new(PTR)));
        self.ctx.func.signature = sig;
        let target = self.module.target_config();
        let mut b = FunctionBuilder::new(&mut self.ctx.func, &mut self.fctx);
        emit_corr(&mut b, spec, blk, true);
        b.seal_all_blocks();
        b.finalize(target);
        let text = self.ctx.func.display().to_string();
        self.module.clear_context(&mut self.ctx);
        text
    }

    /// Generates a per-channel kernel ([`super::channel`]).
    pub(crate) fn channel(&mut self, spec: &super::channel::ChannelSpec) -> Result<FnHandle, String> {
        if self.dry {
            return Ok(FnHandle(FuncId::from_u32(0)));
        }
        let (id, sig) = self.declare(4)?;
        self.ctx.func.signature = sig;
        let has_fma = self.has_fma;
        let target = self.module.target_config();
        let mut b = FunctionBuilder::new(&mut self.ctx.func, &mut self.fctx);
        super::channel::emit(&mut b, spec, has_fma);
        b.seal_all_blocks();
        b.finalize(target);
        self.define(id)
    }

    pub(crate) fn channel_fn(&self, h: FnHandle) -> super::channel::ChannelFn {
        let p = self.module.get_finalized_function(h.0);
        // SAFETY: the function was generated with exactly this signature.
        unsafe { std::mem::transmute::<*const u8, super::channel::ChannelFn>(p) }
    }

    /// Generates a gather kernel ([`super::gather`]).
    pub(crate) fn gather(&mut self, spec: &super::gather::GatherSpec) -> Result<FnHandle, String> {
        self.generate(4, |b, has_fma| super::gather::emit(b, spec, has_fma))
    }

    pub(crate) fn gather_fn(&self, h: FnHandle) -> super::gather::GatherFn {
        let p = self.fn_address(h);
        // SAFETY: the function was generated with exactly this signature.
        unsafe { std::mem::transmute::<*const u8, super::gather::GatherFn>(p) }
    }

    /// Generates a function of `n_ptrs` pointers and two i64 (a position range) whose body
    /// `emit` writes (with FMA available or not); for kernel families outside this file.
    pub(crate) fn generate(
        &mut self,
        n_ptrs: usize,
        emit: impl FnOnce(&mut FunctionBuilder, bool),
    ) -> Result<FnHandle, String> {
        if self.dry {
            return Ok(FnHandle(FuncId::from_u32(0)));
        }
        let (id, sig) = self.declare(n_ptrs)?;
        self.ctx.func.signature = sig;
        let has_fma = self.has_fma;
        let target = self.module.target_config();
        let mut b = FunctionBuilder::new(&mut self.ctx.func, &mut self.fctx);
        emit(&mut b, has_fma);
        b.seal_all_blocks();
        b.finalize(target);
        self.define(id)
    }

    /// The address of a function made by [`Codegen::generate`], after [`Codegen::finish`]; the
    /// caller transmutes it to the signature it generated.
    pub(crate) fn fn_address(&self, h: FnHandle) -> *const u8 {
        self.module.get_finalized_function(h.0)
    }

    /// Generates a function of `n_ptrs` pointers and two i64 (a row range) whose body `emit`
    /// writes into the entry block (given its parameters and whether the host has FMA; the
    /// return is added here); for kernel families outside this file ([`super::winograd`]).
    pub(crate) fn custom(
        &mut self,
        n_ptrs: usize,
        emit: impl FnOnce(&mut FunctionBuilder, &[Value], bool),
    ) -> Result<FnHandle, String> {
        self.generate(n_ptrs, |b, has_fma| {
            let entry = b.create_block();
            b.append_block_params_for_function_params(entry);
            b.switch_to_block(entry);
            let params = b.block_params(entry).to_vec();
            emit(b, &params, has_fma);
            b.ins().return_(&[]);
        })
    }

    /// Generates a weight-gradient kernel.
    pub fn gradw(&mut self, spec: &GradWSpec, blk: Blocking) -> Result<FnHandle, String> {
        if self.dry {
            return Ok(FnHandle(FuncId::from_u32(0)));
        }
        self.cached(format!("gradw {spec:?} {blk:?}"), |cg| cg.gradw_new(spec, blk))
    }

    fn gradw_new(&mut self, spec: &GradWSpec, blk: Blocking) -> Result<FnHandle, String> {
        let (id, sig) = self.declare(3)?;
        self.ctx.func.signature = sig;
        let has_fma = self.has_fma;
        let target = self.module.target_config();
        let mut b = FunctionBuilder::new(&mut self.ctx.func, &mut self.fctx);
        emit_gradw(&mut b, spec, blk, has_fma);
        b.seal_all_blocks();
        b.finalize(target);
        self.define(id)
    }
}

/// A counted loop `for i in start..end` (i64 values) with the body emitted by `body`.
/// Returns after switching to the exit block.
pub(crate) fn counted_loop(
    b: &mut FunctionBuilder,
    start: Value,
    end: Value,
    step: i64,
    mut body: impl FnMut(&mut FunctionBuilder, Value),
) {
    let i = b.declare_var(PTR);
    b.def_var(i, start);
    let header = b.create_block();
    let body_block = b.create_block();
    let exit = b.create_block();
    b.ins().jump(header, &[]);
    b.switch_to_block(header);
    let iv = b.use_var(i);
    let more = b.ins().icmp(IntCC::SignedLessThan, iv, end);
    b.ins().brif(more, body_block, &[], exit, &[]);
    b.switch_to_block(body_block);
    let iv = b.use_var(i);
    body(b, iv);
    let iv = b.use_var(i);
    let next = b.ins().iadd_imm_s(iv, step);
    b.def_var(i, next);
    b.ins().jump(header, &[]);
    b.switch_to_block(exit);
}

pub(crate) fn fmadd(b: &mut FunctionBuilder, has_fma: bool, x: Value, y: Value, acc: Value) -> Value {
    if has_fma {
        b.ins().fma(x, y, acc)
    } else {
        let p = b.ins().fmul(x, y);
        b.ins().fadd(p, acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(ci: usize, epilogue: Epilogue) -> CorrSpec {
        let geo = Geometry {
            ho: 8,
            wo: 8,
            hp: 10,
            wp: 10,
            k: [3, 3],
            s: [1, 1],
            d: [1, 1],
            ci,
            csx: 4,
            co4: 4,
            cso: 4,
        };
        CorrSpec { geo, bias: true, epilogue, pad: [0, 0], shuffle: None }
    }

    /// Layers of the same sizes share one generated function; any difference in the spec or the
    /// blocking gives a function of its own.
    #[test]
    fn identical_kernel_specs_share_one_function() {
        let mut cg = Codegen::new(OptLevel::None).expect("host");
        let a = cg.corr(&spec(3, Epilogue::Relu), CORR_BLOCKING).expect("a");
        let b = cg.corr(&spec(3, Epilogue::Relu), CORR_BLOCKING).expect("b");
        assert_eq!(a.0, b.0);
        assert_eq!(cg.count, 1);
        let c = cg.corr(&spec(3, Epilogue::LeakyRelu(0.1)), CORR_BLOCKING).expect("c");
        let d = cg.corr(&spec(3, Epilogue::LeakyRelu(0.2)), CORR_BLOCKING).expect("d");
        let e = cg.corr(&spec(2, Epilogue::Relu), CORR_BLOCKING).expect("e");
        let f = cg.corr(&spec(3, Epilogue::Relu), GRADW_BLOCKING).expect("f");
        let ids = [a.0, c.0, d.0, e.0, f.0];
        for (i, x) in ids.iter().enumerate() {
            assert!(ids[i + 1..].iter().all(|y| y != x), "{ids:?}");
        }
        let g = GradWSpec { geo: spec(3, Epilogue::None).geo, bias: true, pad: [0, 0] };
        let (g1, g2) = (cg.gradw(&g, GRADW_BLOCKING).expect("g1"), cg.gradw(&g, GRADW_BLOCKING).expect("g2"));
        assert_eq!(g1.0, g2.0);
        assert_eq!(cg.count, 6);
    }

    /// A pixel-shuffle upconv's forward with the shuffle fused into the store writes exactly
    /// what the 1×1 kernel followed by a depth-to-space copy wrote (the oracle below, the
    /// former path): bit for bit, into the layer's own value or a concat's slice, for taps of
    /// 2×2 and 3×2, lanes per tap a multiple of the register block or not.
    #[test]
    fn a_pixel_shuffle_store_is_the_depth_to_space_of_the_unshuffled_kernel() {
        use rand::{Rng, SeedableRng};
        // t[n,h,w,(tap,co)] → y[n, h·k₀+kh, w·k₁+kw, off + co]
        #[allow(clippy::too_many_arguments)]
        fn depth_to_space(
            t: &[f32],
            y: &mut [f32],
            n: usize,
            (h, w): (usize, usize),
            k: [usize; 2],
            co4: usize,
            (wy, cs, off): (usize, usize, usize),
        ) {
            let taps = k[0] * k[1];
            for s in 0..n {
                for i in 0..h {
                    for j in 0..w {
                        for kh in 0..k[0] {
                            for kw in 0..k[1] {
                                let src = (((s * h + i) * w + j) * taps + kh * k[1] + kw) * co4;
                                let dst = (((s * h + i) * k[0] + kh) * wy + j * k[1] + kw) * cs + off;
                                y[dst..dst + co4].copy_from_slice(&t[src..src + co4]);
                            }
                        }
                    }
                }
            }
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for (k, co4, cs, off, epilogue) in [
            ([2, 2], 8, 8, 0, Epilogue::None),
            ([2, 2], 12, 20, 4, Epilogue::Relu),
            ([3, 2], 4, 4, 0, Epilogue::LeakyRelu(0.1)),
            ([2, 2], 20, 24, 0, Epilogue::None),
        ] {
            let (n, h, w, ci, csx) = (2, 3, 7, 6, 8);
            let taps = k[0] * k[1];
            let geo = Geometry {
                ho: h,
                wo: w,
                hp: h,
                wp: w,
                k: [1, 1],
                s: [1, 1],
                d: [1, 1],
                ci,
                csx,
                co4: taps * co4,
                cso: taps * co4,
            };
            let plain = CorrSpec { geo, bias: true, epilogue, pad: [0, 0], shuffle: None };
            let wy = w * k[1];
            let shuffle = Shuffle { k, lanes: co4, wy, cs };
            let fused = CorrSpec { shuffle: Some(shuffle), ..plain.clone() };
            let mut cg = Codegen::new(OptLevel::Speed).expect("host");
            let (hp, hf) = (
                cg.corr(&plain, CORR_BLOCKING).expect("plain"),
                cg.corr(&fused, CORR_BLOCKING).expect("fused"),
            );
            cg.finish().expect("finishes");
            let (fp, ff) = (cg.corr_fn(hp), cg.corr_fn(hf));
            let mut r = |len: usize| (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect::<Vec<f32>>();
            let (x, wt, bias) = (r(n * h * w * csx), r(ci * taps * co4), r(taps * co4));
            let rows = n * h;
            let ylen = n * h * k[0] * wy * cs;
            assert!(fused.y_len(rows) <= ylen - off, "y_len {} of {}", fused.y_len(rows), ylen - off);
            let mut t = vec![0.0f32; rows * w * taps * co4];
            let mut want = vec![f32::NAN; ylen];
            let mut got = want.clone();
            // SAFETY: both kernels were generated for these sizes; the buffers hold what they
            // read and write (`y_len`, asserted above), no mask is read.
            unsafe {
                fp(x.as_ptr(), wt.as_ptr(), bias.as_ptr(), t.as_mut_ptr(), [].as_ptr(), 0, rows as i64);
                ff(
                    x.as_ptr(),
                    wt.as_ptr(),
                    bias.as_ptr(),
                    got[off..].as_mut_ptr(),
                    [].as_ptr(),
                    0,
                    rows as i64,
                );
            }
            depth_to_space(&t, &mut want, n, (h, w), k, co4, (wy, cs, off));
            let same = want.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "k {k:?} co4 {co4} cs {cs} off {off}");
        }
    }
}
