//! The table of diagnostic codes. Codes are stable: once published, a code keeps its meaning.
//! `E` codes are errors, `W` codes warnings. Each entry has a title and a long explanation with
//! a wrong and a fixed example (printed by `geonetc explain CODE`, listed in docs/diagnostics.md).

pub struct CodeInfo {
    pub code: &'static str,
    pub title: &'static str,
    pub explanation: &'static str,
}

macro_rules! codes {
    ($($name:ident = $code:literal, $title:literal, $text:literal;)*) => {
        $(pub const $name: &str = $code;)*
        pub const ALL: &[CodeInfo] = &[$(CodeInfo { code: $code, title: $title, explanation: $text }),*];
    };
}

codes! {
    SYNTAX = "E0001", "syntax error",
"The text does not follow the grammar of the language: a bracket is not closed, a comma or `=`
is missing, or a statement is not one of `input`, `output` or `NAME = EXPR`.

Wrong:
    y = x -> conv(16, kernel=3
Fixed:
    y = x -> conv(16, kernel=3)";

    LITERAL = "E0002", "invalid literal",
"A number is too large to represent, or a string uses an escape other than `\\\"` and `\\\\`.

Wrong:
    save = \"C:\\data\\w.safetensors\"
Fixed:
    save = \"C:\\\\data\\\\w.safetensors\"";

    TOO_DEEP = "E0003", "input too deeply nested or too large",
"The file nests brackets deeper than the checker accepts (256 levels) or is larger than 16 MiB.
Real models never need this; the limit keeps the checker fast and safe on any input.

Wrong:
    y = ((((((((((...x...))))))))))
Fixed:
    y = x";

    NOT_UTF8 = "E0004", "file is not UTF-8",
"geonet files are UTF-8 text. The byte at the reported position is not valid UTF-8; the file may
be binary, or saved in another encoding.

Wrong:
    (a file saved as Latin-1 with a `é` in a comment)
Fixed:
    (the same file saved as UTF-8)";

    MODEL_COUNT = "E0101", "a file needs exactly one model",
"A file holds exactly one `model`, any number of `block`s, at most one `optimizer` and at most one
`train`.

Wrong:
    model a { input x: [4]  output x }
    model b { input x: [4]  output x }
Fixed:
    model a { input x: [4]  output x }";

    DUPLICATE_ITEM = "E0102", "item defined twice",
"Two blocks share a name, or the file has two `optimizer` or two `train` items.

Wrong:
    optimizer sgd { lr = 0.1 }
    optimizer adam { lr = 1e-3 }
Fixed:
    optimizer adam { lr = 1e-3 }";

    UNBOUND = "E0201", "name is not bound",
"A value is used before it is bound with `=` (or declared with `input`), or never bound at all.

Wrong:
    d = z -> relu
Fixed:
    z = x -> conv(8, kernel=3, pad=same)
    d = z -> relu";

    REBOUND = "E0202", "name bound twice",
"Names are bound once. Give the second value a new name.

Wrong:
    h = x -> conv(8, kernel=3)
    h = h -> relu
Fixed:
    h = x -> conv(8, kernel=3)
    h2 = h -> relu";

    UNKNOWN_LAYER = "E0203", "unknown layer or block",
"The name in layer position is neither a built-in layer (conv, upconv, maxpool, avgpool,
upsample, flatten, dense, relu, sigmoid, tanh, softmax, leaky_relu, batchnorm, dropout, concat,
add, sub, unet and the explicit-rank forms conv1d, conv2d, ...) nor a block of this file.

Wrong:
    y = x -> Conv2D(16, kernel=3)
Fixed:
    y = x -> conv2d(16, kernel=3)";

    RECURSION = "E0204", "recursive block",
"A block calls itself, directly or through other blocks. Networks are finite: unroll the
repetition by hand or give the block a depth parameter handled by separate blocks.

Wrong:
    block tower(c) = conv(c, kernel=3) -> tower(c)
Fixed:
    block tower(c) = conv(c, kernel=3) -> conv(c, kernel=3)";

    CALL_ARGS = "E0205", "wrong arguments",
"A layer or block got too many positional arguments, is missing a required one, or a merge got
the wrong number of values.

Wrong:
    y = x -> double_conv()            # block double_conv(c, k = 3)
Fixed:
    y = x -> double_conv(16)";

    VALUE_KIND = "E0206", "a value is used where a layer is expected, or the reverse",
"The left of `->` must be a value and its right a layer or block; layer and block names cannot
stand alone as values, and values cannot be called.

Wrong:
    y = x -> h          # h is a value
Fixed:
    y = concat(x, h)";

    INPUT_DECL = "E0207", "invalid input declaration",
"A model input needs a shape of one to three positive integers: `[F]` (flat), `[C, N]` (1-D) or
`[C, H, W]` (2-D). A long-form block input has no shape.

Wrong:
    input x: [1, 0, 128]
Fixed:
    input x: [1, 128, 128]";

    MISSING_OUTPUT = "E0208", "no output",
"A model (or long-form block) must say what it returns with `output`.

Wrong:
    model m { input x: [4]  y = x -> dense(2) }
Fixed:
    model m { input x: [4]  y = x -> dense(2)  output y }";

    UNKNOWN_ATTRIBUTE = "E0301", "unknown attribute",
"The layer has no attribute of that name. Common spellings from other frameworks are
`padding` (geonet: `pad`), `kernel_size` (`kernel`), `filters`/`out_channels` (`out`),
`strides` (`stride`), `use_bias` (`bias`).

Wrong:
    conv(8, kernel_size=3)
Fixed:
    conv(8, kernel=3)";

    MISSING_ATTRIBUTE = "E0302", "missing required attribute",
"`conv` and `upconv` need `kernel`; layers with a positional argument (`conv(out)`,
`dense(out)`, `maxpool(k)`, `upsample(f)`, `dropout(p)`) need it.

Wrong:
    conv(16)
Fixed:
    conv(16, kernel=3)";

    BAD_VALUE = "E0303", "invalid attribute value",
"The attribute's value has the wrong type or is out of its range: sizes are positive integers,
`pad` is an integer, a tuple, `valid` or `same`, `bias` is true or false, probabilities are in
[0, 1).

Wrong:
    conv(16, kernel=3, stride=0)
Fixed:
    conv(16, kernel=3, stride=1)";

    DUPLICATE_ATTRIBUTE = "E0304", "attribute given twice",
"Each attribute may be given once per call (positionally or by name).

Wrong:
    conv(16, kernel=3, kernel=5)
Fixed:
    conv(16, kernel=5)";

    PAD_SAME = "E0305", "`pad = same` is not possible here",
"`same` padding is dilation·(kernel − 1)/2 on each side, which must be a whole number: use an odd
kernel (or an even dilation), or give `pad` explicitly.

Wrong:
    conv(16, kernel=4, pad=same)
Fixed:
    conv(16, kernel=3, pad=same)";

    INIT_SHAPE = "E0306", "`init` does not fit the parameter",
"`init` gives the starting weights as a nested list in the parameter's shape `[out, in, k...]`
(`[out, in]` for dense); leading axes of size 1 may be left out. All rows must have the same
length.

Wrong:
    conv(1, kernel=3, init=[[1, 0], [0, 1]])
Fixed:
    conv(1, kernel=3, init=[[0, 0, 0], [0, 1, 0], [0, 0, 0]])";

    EMPTY_OUTPUT = "E0401", "layer output would be empty",
"The size formula N_y = floor((N_x + 2·pad − dilation·(N_h − 1) − 1)/stride) + 1 gives less than
one sample: the kernel is larger than the (padded) input. Pad the input, use a smaller kernel, or
feed a larger input.

Wrong:
    input x: [1, 5, 5]
    y = x -> conv(4, kernel=7)          # (5 + 2·0 − 7)/1 + 1 = −1
Fixed:
    y = x -> conv(4, kernel=7, pad=same)";

    RANK = "E0402", "wrong rank",
"The layer needs a value of another rank: `conv2d`/`maxpool2d` need `[C, H, W]`, the `1d` forms
`[C, N]`; sliding-window layers cannot take a flat `[F]` value.

Wrong:
    input t: [1, 1024]
    y = t -> conv2d(8, kernel=3)
Fixed:
    y = t -> conv1d(8, kernel=3)";

    NOT_FLAT = "E0403", "dense needs a flat input",
"`dense` multiplies a feature vector by a matrix; a `[C, H, W]` value must be flattened first.

Wrong:
    y = x -> conv(16, kernel=3) -> dense(10)
Fixed:
    y = x -> conv(16, kernel=3) -> flatten -> dense(10)";

    MERGE_SHAPES = "E0404", "merged values do not fit together",
"`concat` joins values along the channel axis: every spatial size must agree. `add` and `sub`
need equal shapes.

Wrong:
    b = a -> maxpool(2)
    c = concat(a, b)        # 32×32 and 16×16
Fixed:
    c = concat(a -> maxpool(2), b)";

    UNET_SIZE = "E0405", "unet input size not divisible by 2^depth",
"`unet(depth=d)` halves every spatial size d times and doubles it back, so each size must be a
multiple of 2^d. The help names the nearest sizes that work.

Wrong:
    input x: [1, 100, 100]
    y = x -> unet(1, depth=3)
Fixed:
    input x: [1, 96, 96]";

    OVERFLOW = "E0406", "size too large",
"A size, parameter count or arithmetic result does not fit in 64 bits (or is absurdly large). Use
realistic sizes.

Wrong:
    input x: [1, 99999999999, 99999999999]
Fixed:
    input x: [1, 1024, 1024]";

    ATTR_ARITY = "E0407", "per-axis attribute has the wrong number of entries",
"Per-axis attributes take one integer (all axes) or a tuple with one entry per spatial axis:
two for a `[C, H, W]` value, one for `[C, N]`.

Wrong:
    input t: [1, 1024]
    y = t -> conv(8, kernel=(3, 3))
Fixed:
    y = t -> conv(8, kernel=3)";

    TENSOR_ARITHMETIC = "E0408", "arithmetic on values",
"`+ - * /` are for attribute arithmetic on integers. To add or subtract values use the `add` and
`sub` layers.

Wrong:
    y = a + b
Fixed:
    y = add(a, b)";

    UNKNOWN_OPTIMIZER = "E0501", "unknown optimizer",
"The optimizers are sgd, adagrad, rmsprop and adam.

Wrong:
    optimizer adamw { lr = 1e-3 }
Fixed:
    optimizer adam { lr = 1e-3, weight_decay = 1e-4 }";

    UNKNOWN_KEY = "E0502", "unknown optimizer or train setting",
"The setting is not one this optimizer or the train block takes. sgd: lr, momentum, nesterov;
adagrad: lr, eps; rmsprop: lr, rho, eps; adam: lr, rho1 (beta1), rho2 (beta2), eps; all:
weight_decay, clip. train: data, loss, batch, epochs, validate, seed, save.

Wrong:
    optimizer sgd { learning_rate = 0.1 }
Fixed:
    optimizer sgd { lr = 0.1 }";

    OUT_OF_RANGE = "E0503", "setting out of range",
"lr > 0, eps > 0, momentum, rho, rho1 and rho2 in [0, 1), weight_decay ≥ 0, clip > 0; batch and
epochs are positive integers, validate is in [0, 1).

Wrong:
    optimizer adam { lr = 1e-3, rho1 = 1.2 }
Fixed:
    optimizer adam { lr = 1e-3, rho1 = 0.9 }";

    BAD_DATA = "E0504", "invalid training data or loss",
"`data` is `synthetic(...)`, `segy(\"file\", ...)` or `npy(input = \"...\", target = \"...\")`;
`loss` is mse, mae or cross_entropy.

Wrong:
    data = random(count = 10)
Fixed:
    data = synthetic(shape = [1, 128, 128], count = 10)";

    DATA_SHAPE = "E0505", "training data does not fit the model",
"The data's samples must have the model's input shape, and for denoising data (synthetic, segy)
the model's output must have that shape too, since the clean data is the target.

Wrong:
    input x: [1, 64, 64]
    data = synthetic(shape = [1, 128, 128])
Fixed:
    data = synthetic(shape = [1, 64, 64])";

    WEIGHTS_NOT_SAFETENSORS = "E0601", "weights file is not safetensors",
"The file given with `--weights` (or `--resume`) is not a safetensors file: it is empty, cut
short, or another format (a PyTorch `.pt` pickle, a `.npy`, text). geonetc reads and writes
weights as safetensors: an 8-byte header length, a JSON header naming every tensor, the raw
numbers.

Wrong:
    geonetc infer denoiser.geonet --weights denoiser.pt ...
Fixed:
    geonetc infer denoiser.geonet --weights denoiser.safetensors ...";

    WEIGHTS_MISSING = "E0602", "tensor missing from the weights",
"A layer's parameter has no tensor in the weights file. Tensor names are the layer names
`check` prints (`e1.conv0.weight`); layer names follow the bindings, so weights trained before a
binding was renamed or a layer was added do not have it.

Wrong:
    (weights trained with `y = x -> conv(1, kernel=3)`, used with)
    y = x -> conv(8, kernel=3) -> relu -> conv(1, kernel=3)
Fixed:
    (train the changed model again: geonetc run FILE)";

    WEIGHTS_EXTRA = "E0603", "tensor the model does not have",
"The weights file holds a tensor that no layer of the model has: the weights belong to another
model, a layer was removed or renamed, or a layer has `bias=false` where the trained one had a
bias.

Wrong:
    y = x -> conv(1, kernel=3, bias=false)   (weights with `y.conv0.bias`)
Fixed:
    y = x -> conv(1, kernel=3)";

    WEIGHTS_SHAPE = "E0604", "tensor of the wrong shape or type",
"A tensor in the weights file does not have the shape (or number type) the layer needs. geonet
stores every weight as `[out, in, kernel...]`: a kernel in PyTorch's ConvTranspose layout
`[in, out, ...]` is transposed; another first or second axis means another channel count.

Wrong:
    y = x -> conv(16, kernel=3)   (weights trained with conv(8, kernel=3))
Fixed:
    y = x -> conv(8, kernel=3)";

    STRIDE_DROPS = "W0001", "stride drops trailing samples",
"(N_x + 2·pad − dilation·(N_h − 1) − 1) is not a multiple of the stride, so the last input rows,
columns or samples are never read. Often harmless, sometimes a sign of an input size off by one.

Warned:
    input x: [1, 5, 5]
    d = x -> conv(1, kernel=2, stride=2)     # (5 − 2) is odd: last row and column dropped
Quiet:
    input x: [1, 6, 6]";

    UNUSED_BINDING = "W0002", "unused binding",
"The value is bound but never used or returned: its layers are still checked, but they cost
parameters and time for nothing.

Warned:
    h = x -> conv(8, kernel=3)
    output x
Quiet:
    output h";

    UNUSED_BLOCK = "W0003", "unused block",
"The block is defined but never called, so its shapes are never checked.

Warned:
    block enc(c) = conv(c, kernel=3) -> relu
    (no call of enc)
Quiet:
    y = x -> enc(16)";

    WEIGHTS_INPUT_SIZE = "W0601", "weights trained at another input size",
"The weights file says (metadata `input_shapes`, written by `geonetc run`) that the weights were
trained on inputs of another shape than the model declares. A fully convolutional model runs at
any accepted size, but its filters learned the scale of the training patches.

Warned:
    input x: [1, 256, 256]   (weights trained with input x: [1, 64, 64])
Quiet:
    input x: [1, 64, 64]";

    WEIGHTS_DATA_RMS = "W0602", "weights trained on data of another RMS",
"The RMS of the data the weights were trained on (metadata `data_rms`) differs by more than 10 %
from the RMS of the data at hand (the train block's data, for `check --weights`). The network
learned amplitudes near its training data's.

Warned:
    data = npy(\"loud.npy\", \"clean.npy\")   (RMS 20; weights trained at RMS 1)
Quiet:
    (scale the data to the training RMS, or train on it)";
}

pub fn lookup(code: &str) -> Option<&'static CodeInfo> {
    ALL.iter().find(|c| c.code.eq_ignore_ascii_case(code))
}

/// docs/diagnostics.md, generated from this table (a test keeps the file in sync).
pub fn markdown() -> String {
    let mut s = String::from(
        "# Diagnostic codes\n\nGenerated from `src/diag/codes.rs` (`geonetc explain CODE` prints the same text).\n\
         Codes are stable: `E` codes are errors (exit 1), `W` codes warnings.\n\n| code | title |\n|---|---|\n",
    );
    for c in ALL {
        s.push_str(&format!("| [{}](#{}) | {} |\n", c.code, c.code.to_ascii_lowercase(), c.title));
    }
    for c in ALL {
        s.push_str(&format!("\n## {}\n\n**{}**\n\n```text\n{}\n```\n", c.code, c.title, c.explanation));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_documented() {
        let mut seen = std::collections::HashSet::new();
        for c in ALL {
            assert!(seen.insert(c.code), "duplicate code {}", c.code);
            assert!(
                c.explanation.contains("Wrong:") || c.explanation.contains("Warned:"),
                "{} lacks an example",
                c.code
            );
            assert!(
                c.explanation.contains("Fixed:") || c.explanation.contains("Quiet:"),
                "{} lacks a fix",
                c.code
            );
        }
    }

    #[test]
    fn docs_diagnostics_md_is_in_sync() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/diagnostics.md");
        let on_disk = std::fs::read_to_string(path).unwrap_or_default();
        if on_disk != markdown() {
            if std::env::var_os("CI").is_none() {
                std::fs::write(path, markdown()).expect("write docs/diagnostics.md");
            }
            panic!("docs/diagnostics.md was out of date (rewritten locally; commit it)");
        }
    }
}
