//! Cranelift code generation: the two kernel families every linear layer (conv, upconv, dense,
//! their gradients) is lowered to, specialised on every size as a constant.
//!
//! Both work on NHWC f32 buffers (`[N, H, W, C]`, channels innermost with a channel stride ≥ C,
//! a multiple of 4 for outputs) that the caller has already prepared (zero-padded), so the
//! generated loops never test bounds:
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

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{AbiParam, InstBuilder, MemFlagsData, Type, Value, types};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{FuncId, Linkage, Module, default_libcall_names};

/// What happens to each accumulator before it is stored.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Epilogue {
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
}

/// A weight-gradient kernel, fully specialised.
#[derive(Clone, Debug, PartialEq)]
pub struct GradWSpec {
    pub geo: Geometry,
    /// Also sum `dy` per channel (the bias gradient) into `co4` f64 values stored from
    /// `dw[ci·taps·co4]` on (2·co4 f32 slots), in the same pass over the rows.
    pub bias: bool,
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
/// Output positions per iteration of the weight-gradient loop.
const UNROLL: usize = 8;

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
}

// SAFETY: the JIT module is only used behind `&mut` while compiling; once finished, the code
// it owns is immutable and only read (called) through plain function pointers.
unsafe impl Send for Codegen {}
// SAFETY: as for `Send`: a `&Codegen` gives no way to mutate the module.
unsafe impl Sync for Codegen {}

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
        let name = format!("k{}", self.count);
        self.count += 1;
        let id = self.module.declare_function(&name, Linkage::Local, &sig).map_err(|e| e.to_string())?;
        Ok((id, sig))
    }

    fn define(&mut self, id: FuncId) -> Result<FnHandle, String> {
        self.module.define_function(id, &mut self.ctx).map_err(|e| format!("cranelift: {e:?}"))?;
        self.module.clear_context(&mut self.ctx);
        Ok(FnHandle(id))
    }

    pub fn is_dry(&self) -> bool {
        self.dry
    }

    /// Makes every defined function callable.
    pub fn finish(&mut self) -> Result<(), String> {
        if self.dry {
            return Ok(());
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

    /// Generates a cross-correlation kernel.
    pub fn corr(&mut self, spec: &CorrSpec, blk: Blocking) -> Result<FnHandle, String> {
        if self.dry {
            return Ok(FnHandle(FuncId::from_u32(0)));
        }
        let key = format!("corr {spec:?} {blk:?}");
        if let Some(&h) = self.kernels.get(&key) {
            return Ok(h);
        }
        let h = self.corr_new(spec, blk)?;
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
        let key = format!("gradw {spec:?} {blk:?}");
        if let Some(&h) = self.kernels.get(&key) {
            return Ok(h);
        }
        let h = self.gradw_new(spec, blk)?;
        self.kernels.insert(key, h);
        Ok(h)
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

fn bcast(b: &mut FunctionBuilder, ptr: Value, off: i64) -> Value {
    let s = b.ins().load(types::F32, flags(), ptr, off as i32);
    b.ins().splat(F32X4, s)
}

/// The epilogue `e` applied to accumulator `a` before it is stored; a mask epilogue reads the
/// mask vector at `mask + off` (the mask has the output's layout). `zero` is a zero f32x4.
pub(crate) fn apply_epilogue(
    b: &mut FunctionBuilder,
    e: Epilogue,
    a: Value,
    zero: Value,
    (mask, off): (Value, i32),
    has_fma: bool,
) -> Value {
    match e {
        Epilogue::None => a,
        Epilogue::Relu => b.ins().fmax(a, zero),
        Epilogue::LeakyRelu(s) => {
            let sv = b.ins().f32const(s);
            let sv = b.ins().splat(F32X4, sv);
            let sa = b.ins().fmul(a, sv);
            if s <= 1.0 { b.ins().fmax(a, sa) } else { b.ins().fmin(a, sa) }
        }
        Epilogue::ReluMask | Epilogue::LeakyMask(_) => {
            let mv = b.ins().load(F32X4, flags(), mask, off);
            let pos = b.ins().fcmp(FloatCC::GreaterThan, mv, zero);
            let pos = b.ins().bitcast(
                F32X4,
                MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little),
                pos,
            );
            let other = match e {
                Epilogue::LeakyMask(s) => {
                    let sv = b.ins().f32const(s);
                    let sv = b.ins().splat(F32X4, sv);
                    b.ins().fmul(a, sv)
                }
                _ => zero,
            };
            b.ins().bitselect(pos, a, other)
        }
        Epilogue::Sigmoid => super::exp::sigmoid(b, has_fma, a),
        Epilogue::Tanh => super::exp::tanh(b, has_fma, a),
        Epilogue::SigmoidMask | Epilogue::TanhMask => {
            let mv = b.ins().load(F32X4, flags(), mask, off);
            let one = b.ins().f32const(1.0);
            let one = b.ins().splat(F32X4, one);
            let d = if e == Epilogue::SigmoidMask {
                let r = b.ins().fsub(one, mv);
                b.ins().fmul(mv, r)
            } else {
                let nm = b.ins().fneg(mv);
                fmadd(b, has_fma, nm, mv, one)
            };
            b.ins().fmul(a, d)
        }
    }
}

/// Emits the correlation kernel body into a fresh function.
fn emit_corr(b: &mut FunctionBuilder, spec: &CorrSpec, blk: Blocking, has_fma: bool) {
    let sp = &spec.geo;
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let p = b.block_params(entry).to_vec();
    let (x, w, bias, y, m, row0, row1) = (p[0], p[1], p[2], p[3], p[4], p[5], p[6]);
    let ktaps = sp.k[0] * sp.k[1];
    let w_ci_stride = (ktaps * sp.co4 * 4) as i64;
    let vb = blk.v.min(sp.co4 / 4).max(1);
    let co_full = sp.co4 / (4 * vb);
    let co_tail = (sp.co4 / 4) % vb;
    let r_full = sp.wo / blk.r;
    let r_tail = sp.wo % blk.r;
    let x_row_bytes = (sp.wp * sp.csx * 4) as i64;
    let y_row_bytes = (sp.wo * sp.cso * 4) as i64;
    counted_loop(b, row0, row1, 1, |b, row| {
        let n = b.ins().udiv_imm_s(row, sp.ho as i64);
        let nho = b.ins().imul_imm_s(n, sp.ho as i64);
        let oh = b.ins().isub(row, nho);
        // input row of tap (0, ·): n·hp + oh·s₀
        let nhp = b.ins().imul_imm_s(n, sp.hp as i64);
        let ohs = b.ins().imul_imm_s(oh, sp.s[0] as i64);
        let xr = b.ins().iadd(nhp, ohs);
        let xoff = b.ins().imul_imm_s(xr, x_row_bytes);
        let xrow = b.ins().iadd(x, xoff);
        let yoff = b.ins().imul_imm_s(row, y_row_bytes);
        let yrow = b.ins().iadd(y, yoff);
        let mrow = b.ins().iadd(m, yoff);
        // One tile: positions [ow0, ow0 + r) × vectors [co0, co0 + v).
        let tile = |b: &mut FunctionBuilder,
                    ow_bytes_x: Value,
                    ow_bytes_y: Value,
                    co_bytes: Value,
                    r: usize,
                    v: usize| {
            let xb = b.ins().iadd(xrow, ow_bytes_x);
            let yb = b.ins().iadd(yrow, ow_bytes_y);
            let yb = b.ins().iadd(yb, co_bytes);
            let mb = b.ins().iadd(mrow, ow_bytes_y);
            let mb = b.ins().iadd(mb, co_bytes);
            let wb = b.ins().iadd(w, co_bytes);
            let bb = b.ins().iadd(bias, co_bytes);
            let accs: Vec<Variable> = (0..r * v).map(|_| b.declare_var(F32X4)).collect();
            for j in 0..v {
                let init = if spec.bias {
                    b.ins().load(F32X4, flags(), bb, (16 * j) as i32)
                } else {
                    let z = b.ins().f32const(0.0);
                    b.ins().splat(F32X4, z)
                };
                for i in 0..r {
                    b.def_var(accs[i * v + j], init);
                }
            }
            let xp = b.declare_var(PTR);
            let wp = b.declare_var(PTR);
            b.def_var(xp, xb);
            b.def_var(wp, wb);
            let zero = b.ins().iconst(PTR, 0);
            // Channels unrolled by `unroll` when there are few taps (1×1 kernels, the
            // Winograd products), so the loop's own instructions do not rival the FMAs.
            let unroll = if ktaps >= 4 {
                1
            } else {
                [4, 2, 1].into_iter().find(|u| sp.ci.is_multiple_of(*u)).unwrap_or(1)
            };
            let end = b.ins().iconst(PTR, (sp.ci / unroll) as i64);
            counted_loop(b, zero, end, 1, |b, _ci| {
                let xpv = b.use_var(xp);
                let wpv = b.use_var(wp);
                for q in 0..unroll {
                    for kh in 0..sp.k[0] {
                        for kw in 0..sp.k[1] {
                            let tap = kh * sp.k[1] + kw;
                            let wv: Vec<Value> = (0..v)
                                .map(|j| {
                                    let off = ((tap * sp.co4 + 4 * j) * 4) as i64 + q as i64 * w_ci_stride;
                                    b.ins().load(F32X4, flags(), wpv, off as i32)
                                })
                                .collect();
                            for i in 0..r {
                                let off = ((kh * sp.d[0] * sp.wp + kw * sp.d[1] + i * sp.s[1]) * sp.csx * 4
                                    + 4 * q) as i64;
                                let xs = bcast(b, xpv, off);
                                for j in 0..v {
                                    let a = b.use_var(accs[i * v + j]);
                                    let a = fmadd(b, has_fma, xs, wv[j], a);
                                    b.def_var(accs[i * v + j], a);
                                }
                            }
                        }
                    }
                }
                let xn = b.ins().iadd_imm_s(xpv, 4 * unroll as i64);
                let wn = b.ins().iadd_imm_s(wpv, w_ci_stride * unroll as i64);
                b.def_var(xp, xn);
                b.def_var(wp, wn);
            });
            let zero_v = {
                let z = b.ins().f32const(0.0);
                b.ins().splat(F32X4, z)
            };
            for i in 0..r {
                for j in 0..v {
                    let a = b.use_var(accs[i * v + j]);
                    let off = ((i * sp.cso + 4 * j) * 4) as i32;
                    let out = apply_epilogue(b, spec.epilogue, a, zero_v, (mb, off), has_fma);
                    b.ins().store(flags(), out, yb, off);
                }
            }
        };
        // Full and tail blocks along the width, each over full and tail channel blocks.
        let width_part = |b: &mut FunctionBuilder, ow_x: Value, ow_y: Value, r: usize| {
            if co_full > 0 {
                let zero = b.ins().iconst(PTR, 0);
                let end = b.ins().iconst(PTR, (co_full * 16 * vb) as i64);
                counted_loop(b, zero, end, (16 * vb) as i64, |b, co_bytes| {
                    tile(b, ow_x, ow_y, co_bytes, r, vb)
                });
            }
            if co_tail > 0 {
                let co_bytes = b.ins().iconst(PTR, (co_full * 16 * vb) as i64);
                tile(b, ow_x, ow_y, co_bytes, r, co_tail);
            }
        };
        if r_full > 0 {
            let zero = b.ins().iconst(PTR, 0);
            let end = b.ins().iconst(PTR, r_full as i64);
            counted_loop(b, zero, end, 1, |b, ob| {
                let ow_x = b.ins().imul_imm_s(ob, (blk.r * sp.s[1] * sp.csx * 4) as i64);
                let ow_y = b.ins().imul_imm_s(ob, (blk.r * sp.cso * 4) as i64);
                width_part(b, ow_x, ow_y, blk.r);
            });
        }
        if r_tail > 0 {
            let ow_x = b.ins().iconst(PTR, (r_full * blk.r * sp.s[1] * sp.csx * 4) as i64);
            let ow_y = b.ins().iconst(PTR, (r_full * blk.r * sp.cso * 4) as i64);
            width_part(b, ow_x, ow_y, r_tail);
        }
    });
    b.ins().return_(&[]);
}

/// Emits the weight-gradient kernel body into a fresh function. Rows are the outer loop, so the
/// few input rows a tile reads stay in L1 while every tile passes over them; each tile's
/// accumulators are loaded from and stored back to `dw` per row (the caller zeroes `dw`).
fn emit_gradw(b: &mut FunctionBuilder, spec: &GradWSpec, blk: Blocking, has_fma: bool) {
    let sp = &spec.geo;
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let p = b.block_params(entry).to_vec();
    let (x, dy, dw, row0, row1) = (p[0], p[1], p[2], p[3], p[4]);
    let ktaps = sp.k[0] * sp.k[1];
    let vb = blk.v.min(sp.co4 / 4).max(1);
    let co_full = sp.co4 / (4 * vb);
    let co_tail = (sp.co4 / 4) % vb;
    let rb = blk.r.min(sp.ci).max(1);
    let ci_full = sp.ci / rb;
    let ci_tail = sp.ci % rb;
    let x_row_bytes = (sp.wp * sp.csx * 4) as i64;
    let d_row_bytes = (sp.wo * sp.cso * 4) as i64;
    counted_loop(b, row0, row1, 1, |b, row| {
        let n = b.ins().udiv_imm_s(row, sp.ho as i64);
        let nho = b.ins().imul_imm_s(n, sp.ho as i64);
        let oh = b.ins().isub(row, nho);
        let nhp = b.ins().imul_imm_s(n, sp.hp as i64);
        let ohs = b.ins().imul_imm_s(oh, sp.s[0] as i64);
        let xr = b.ins().iadd(nhp, ohs);
        let xoff = b.ins().imul_imm_s(xr, x_row_bytes);
        let xrow = b.ins().iadd(x, xoff);
        let doff = b.ins().imul_imm_s(row, d_row_bytes);
        let drow = b.ins().iadd(dy, doff);
        // tile: channels [ci0, ci0 + r) of tap (kh, kw) × vectors [co0, co0 + v).
        // tile: reduction rows `rows[i] = (channel offset, tap)` relative to channel `ci0` ×
        // vectors [co0, co0 + v). Rows are consecutive channels at one tap, or — for inputs with
        // fewer channels than the block — consecutive taps of one channel.
        let tile =
            |b: &mut FunctionBuilder, ci_bytes: Value, rows: &[(usize, usize)], co_bytes: Value, v: usize| {
                let r = rows.len();
                let ci_off = b.ins().imul_imm_s(ci_bytes, (ktaps * sp.co4) as i64);
                let wbase = b.ins().iadd(dw, ci_off);
                let wbase = b.ins().iadd(wbase, co_bytes);
                let woff =
                    |i: usize, j: usize| (((rows[i].0 * ktaps + rows[i].1) * sp.co4 + 4 * j) * 4) as i32;
                let x_off = |i: usize| {
                    let (c, tap) = rows[i];
                    let (kh, kw) = (tap / sp.k[1], tap % sp.k[1]);
                    (((kh * sp.d[0] * sp.wp + kw * sp.d[1]) * sp.csx + c) * 4) as i64
                };
                let accs: Vec<Variable> = (0..r * v).map(|_| b.declare_var(F32X4)).collect();
                for i in 0..r {
                    for j in 0..v {
                        let a = b.ins().load(F32X4, flags(), wbase, woff(i, j));
                        b.def_var(accs[i * v + j], a);
                    }
                }
                let xstart = b.ins().iadd(xrow, ci_bytes);
                let dstart = b.ins().iadd(drow, co_bytes);
                let xp = b.declare_var(PTR);
                let dp = b.declare_var(PTR);
                b.def_var(xp, xstart);
                b.def_var(dp, dstart);
                // Positions unrolled by UNROLL (fewer loop instructions per FMA), then the rest.
                let x_step = (sp.s[1] * sp.csx * 4) as i64;
                let d_step = (sp.cso * 4) as i64;
                let body = |b: &mut FunctionBuilder, u: usize| {
                    let xpv = b.use_var(xp);
                    let dpv = b.use_var(dp);
                    for q in 0..u {
                        let dv: Vec<Value> = (0..v)
                            .map(|j| {
                                b.ins().load(F32X4, flags(), dpv, (q as i64 * d_step + 16 * j as i64) as i32)
                            })
                            .collect();
                        for i in 0..r {
                            let xs = bcast(b, xpv, q as i64 * x_step + x_off(i));
                            for j in 0..v {
                                let a = b.use_var(accs[i * v + j]);
                                let a = fmadd(b, has_fma, xs, dv[j], a);
                                b.def_var(accs[i * v + j], a);
                            }
                        }
                    }
                    let xn = b.ins().iadd_imm_s(xpv, u as i64 * x_step);
                    let dn = b.ins().iadd_imm_s(dpv, u as i64 * d_step);
                    b.def_var(xp, xn);
                    b.def_var(dp, dn);
                };
                let full = sp.wo / UNROLL;
                if full > 0 {
                    let zero = b.ins().iconst(PTR, 0);
                    let end = b.ins().iconst(PTR, full as i64);
                    counted_loop(b, zero, end, 1, |b, _| body(b, UNROLL));
                }
                if !sp.wo.is_multiple_of(UNROLL) {
                    body(b, sp.wo % UNROLL);
                }
                for i in 0..r {
                    for j in 0..v {
                        let a = b.use_var(accs[i * v + j]);
                        b.ins().store(flags(), a, wbase, woff(i, j));
                    }
                }
            };
        let over_co = |b: &mut FunctionBuilder, ci_bytes: Value, rows: &[(usize, usize)]| {
            if co_full > 0 {
                let zero = b.ins().iconst(PTR, 0);
                let end = b.ins().iconst(PTR, (co_full * 16 * vb) as i64);
                counted_loop(b, zero, end, (16 * vb) as i64, |b, co_bytes| {
                    tile(b, ci_bytes, rows, co_bytes, vb)
                });
            }
            if co_tail > 0 {
                let co_bytes = b.ins().iconst(PTR, (co_full * 16 * vb) as i64);
                tile(b, ci_bytes, rows, co_bytes, co_tail);
            }
        };
        let per_ci = |b: &mut FunctionBuilder, ci_bytes: Value, r: usize| {
            if r < blk.r && ktaps > 1 {
                // Few channels: block over taps instead, one channel at a time.
                for c in 0..r {
                    let taps: Vec<usize> = (0..ktaps).collect();
                    for group in taps.chunks(blk.r) {
                        let rows: Vec<(usize, usize)> = group.iter().map(|&t| (c, t)).collect();
                        over_co(b, ci_bytes, &rows);
                    }
                }
            } else {
                for tap in 0..ktaps {
                    let rows: Vec<(usize, usize)> = (0..r).map(|c| (c, tap)).collect();
                    over_co(b, ci_bytes, &rows);
                }
            }
        };
        if ci_full > 0 {
            let zero = b.ins().iconst(PTR, 0);
            let end = b.ins().iconst(PTR, (ci_full * rb * 4) as i64);
            counted_loop(b, zero, end, (rb * 4) as i64, |b, ci_bytes| per_ci(b, ci_bytes, rb));
        }
        if ci_tail > 0 {
            let ci_bytes = b.ins().iconst(PTR, (ci_full * rb * 4) as i64);
            per_ci(b, ci_bytes, ci_tail);
        }
        if spec.bias {
            // Σ dy per channel over this row in f32x4 while the row is in cache, then added to
            // f64 sums (two f64x2 per 4 channels) in `dw[ci·taps·co4 ..]`.
            let base = b.ins().iadd_imm_s(dw, (sp.ci * ktaps * sp.co4 * 4) as i64);
            let co4 = sp.co4 / 4;
            let le = MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little);
            let high_half = b.func.dfg.immediates.push(cranelift_codegen::ir::ConstantData::from(vec![
                8u8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7,
            ]));
            for j0 in (0..co4).step_by(4) {
                let v = (co4 - j0).min(4);
                let accs: Vec<Variable> = (0..v).map(|_| b.declare_var(F32X4)).collect();
                let z = b.ins().f32const(0.0);
                let z = b.ins().splat(F32X4, z);
                for a in &accs {
                    b.def_var(*a, z);
                }
                let dp = b.declare_var(PTR);
                b.def_var(dp, drow);
                let zero = b.ins().iconst(PTR, 0);
                let end = b.ins().iconst(PTR, sp.wo as i64);
                counted_loop(b, zero, end, 1, |b, _ow| {
                    let dpv = b.use_var(dp);
                    for (j, a) in accs.iter().enumerate() {
                        let d = b.ins().load(F32X4, flags(), dpv, (16 * (j0 + j)) as i32);
                        let av = b.use_var(*a);
                        let sum = b.ins().fadd(av, d);
                        b.def_var(*a, sum);
                    }
                    let dn = b.ins().iadd_imm_s(dpv, (sp.cso * 4) as i64);
                    b.def_var(dp, dn);
                });
                for (j, a) in accs.iter().enumerate() {
                    let av = b.use_var(*a);
                    let lo = b.ins().fvpromote_low(av);
                    let bytes = b.ins().bitcast(types::I8X16, le, av);
                    let swapped = b.ins().shuffle(bytes, bytes, high_half);
                    let hi4 = b.ins().bitcast(F32X4, le, swapped);
                    let hi = b.ins().fvpromote_low(hi4);
                    let off = (32 * (j0 + j)) as i32;
                    let s_lo = b.ins().load(types::F64X2, flags(), base, off);
                    let s_hi = b.ins().load(types::F64X2, flags(), base, off + 16);
                    let s_lo = b.ins().fadd(s_lo, lo);
                    let s_hi = b.ins().fadd(s_hi, hi);
                    b.ins().store(flags(), s_lo, base, off);
                    b.ins().store(flags(), s_hi, base, off + 16);
                }
            }
        }
    });
    b.ins().return_(&[]);
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
        CorrSpec { geo, bias: true, epilogue }
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
        let g = GradWSpec { geo: spec(3, Epilogue::None).geo, bias: true };
        let (g1, g2) = (cg.gradw(&g, GRADW_BLOCKING).expect("g1"), cg.gradw(&g, GRADW_BLOCKING).expect("g2"));
        assert_eq!(g1.0, g2.0);
        assert_eq!(cg.count, 6);
    }
}
