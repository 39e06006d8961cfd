#!/usr/bin/env python3
"""Independent reference numbers for geonetc's interpreter, computed with PyTorch (float64).

For each small geonet program below, the same network is written here by hand in PyTorch's
functional API (geonet stores transposed-convolution weights [out, in, k...]; PyTorch wants
[in, out, k...], so they are transposed here). Random inputs, targets and parameters are drawn
with a fixed seed; the script records the training-mode forward output, the loss, the gradient
of every parameter, and the parameters (with batchnorm running statistics) after 3 full-batch
steps of each optimizer configuration. Optimizer updates follow language.md; clipping is done
by hand as the spec says (rescale when the global norm exceeds c).

usage: scripts/make_fixtures.py  (writes tests/fixtures/reference_*.json)
needs: torch (e.g. ~/.venvs/peers/bin/python)
"""
import json
import os

import torch
import torch.nn.functional as F

torch.manual_seed(1234)
DT = torch.float64
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")

FX2D = """model fx2d {
    input x: [2, 8, 8]
    a = x -> conv(4, kernel=3, pad=1) -> batchnorm -> leaky_relu(0.1)
    b = a -> maxpool(2) -> conv(6, kernel=3, pad=1) -> tanh
    u = b -> upconv(4, kernel=2, stride=2)
    c = concat(u, a) -> conv(2, kernel=3, pad=2, dilation=2) -> sigmoid
    d = x -> avgpool(2) -> upsample(2, mode=linear) -> conv(2, kernel=1)
    e = x -> maxpool(3, stride=1, pad=1) -> avgpool(3, stride=1, pad=1) -> conv(2, kernel=1, bias=false)
    s = add(c, d)
    t = sub(s, e)
    f = b -> upsample(2) -> conv(2, kernel=1) -> softmax
    y = add(t, f)
    output y
}
"""

FX1D = """model fx1d {
    input x: [1, 16]
    h = x -> conv(3, kernel=5, stride=2, pad=2) -> relu -> upsample(2, mode=linear) -> conv(1, kernel=3, pad=1)
    g = x -> conv(2, kernel=3, dilation=2, pad=2) -> maxpool(2) -> upconv(1, kernel=2, stride=2)
    y = sub(x, h) -> add(g)
    output y
}
"""

FXCLS = """model fxcls {
    input x: [1, 6, 6]
    logits = x -> conv(3, kernel=3) -> relu -> flatten -> dense(5) -> tanh -> dense(3)
    output logits
}
"""


FXGROUPNORM = """model fxgroupnorm {
    input x: [2, 6, 5]
    a = x -> conv(6, kernel=3, pad=1) -> groupnorm(3) -> relu
    y = a -> conv(4, kernel=1) -> groupnorm(4, eps=0.001)
    output y
}
"""


FXSILU = """model fxsilu {
    input x: [2, 12]
    y = x -> conv(3, kernel=3, pad=1) -> silu -> conv(2, kernel=3, pad=1) -> silu
    output y
}
"""


def p(shape, scale=0.5):
    return (torch.rand(*shape, dtype=DT) * 2 - 1) * scale


def fwd2d(P, x):
    a = F.conv2d(x, P["a.conv0.weight"], P["a.conv0.bias"], padding=1)
    a = F.batch_norm(a, P["a.batchnorm0.running_mean"], P["a.batchnorm0.running_var"],
                     P["a.batchnorm0.weight"], P["a.batchnorm0.bias"], training=True, momentum=0.1, eps=1e-5)
    a = F.leaky_relu(a, 0.1)
    b = torch.tanh(F.conv2d(F.max_pool2d(a, 2), P["b.conv0.weight"], P["b.conv0.bias"], padding=1))
    u = F.conv_transpose2d(b, P["u.upconv0.weight"].transpose(0, 1), P["u.upconv0.bias"], stride=2)
    c = torch.sigmoid(F.conv2d(torch.cat([u, a], 1), P["c.conv0.weight"], P["c.conv0.bias"], padding=2, dilation=2))
    d = F.interpolate(F.avg_pool2d(x, 2), scale_factor=2, mode="bilinear", align_corners=False)
    d = F.conv2d(d, P["d.conv0.weight"], P["d.conv0.bias"])
    e = F.max_pool2d(x, 3, stride=1, padding=1)
    e = F.avg_pool2d(e, 3, stride=1, padding=1, count_include_pad=True)
    e = F.conv2d(e, P["e.conv0.weight"])
    f = F.interpolate(b, scale_factor=2, mode="nearest")
    f = torch.softmax(F.conv2d(f, P["f.conv0.weight"], P["f.conv0.bias"]), dim=1)
    return (c + d) - e + f


def fwd1d(P, x):
    h = F.relu(F.conv1d(x, P["h.conv0.weight"], P["h.conv0.bias"], stride=2, padding=2))
    h = F.interpolate(h, scale_factor=2, mode="linear", align_corners=False)
    h = F.conv1d(h, P["h.conv1.weight"], P["h.conv1.bias"], padding=1)
    g = F.conv1d(x, P["g.conv0.weight"], P["g.conv0.bias"], padding=2, dilation=2)
    g = F.conv_transpose1d(F.max_pool1d(g, 2), P["g.upconv0.weight"].transpose(0, 1), P["g.upconv0.bias"], stride=2)
    return (x - h) + g


def fwdcls(P, x):
    h = F.relu(F.conv2d(x, P["logits.conv0.weight"], P["logits.conv0.bias"]))
    h = torch.tanh(F.linear(h.flatten(1), P["logits.dense0.weight"], P["logits.dense0.bias"]))
    return F.linear(h, P["logits.dense1.weight"], P["logits.dense1.bias"])


def fwdgroupnorm(P, x):
    a = F.conv2d(x, P["a.conv0.weight"], P["a.conv0.bias"], padding=1)
    a = F.relu(F.group_norm(a, 3, P["a.groupnorm0.weight"], P["a.groupnorm0.bias"], eps=1e-5))
    y = F.conv2d(a, P["y.conv0.weight"], P["y.conv0.bias"])
    return F.group_norm(y, 4, P["y.groupnorm0.weight"], P["y.groupnorm0.bias"], eps=1e-3)


def fwdsilu(P, x):
    h = F.silu(F.conv1d(x, P["y.conv0.weight"], P["y.conv0.bias"], padding=1))
    return F.silu(F.conv1d(h, P["y.conv1.weight"], P["y.conv1.bias"], padding=1))


CASES = [
    ("fx2d", FX2D, fwd2d, 3, [2, 8, 8], [2, 8, 8], "mse", {
        "a.conv0.weight": [4, 2, 3, 3], "a.conv0.bias": [4],
        "a.batchnorm0.weight": [4], "a.batchnorm0.bias": [4],
        "a.batchnorm0.running_mean": [4], "a.batchnorm0.running_var": [4],
        "b.conv0.weight": [6, 4, 3, 3], "b.conv0.bias": [6],
        "u.upconv0.weight": [4, 6, 2, 2], "u.upconv0.bias": [4],
        "c.conv0.weight": [2, 8, 3, 3], "c.conv0.bias": [2],
        "d.conv0.weight": [2, 2, 1, 1], "d.conv0.bias": [2],
        "e.conv0.weight": [2, 2, 1, 1],
        "f.conv0.weight": [2, 6, 1, 1], "f.conv0.bias": [2],
    }),
    ("fx1d", FX1D, fwd1d, 4, [1, 16], [1, 16], "mae", {
        "h.conv0.weight": [3, 1, 5], "h.conv0.bias": [3],
        "h.conv1.weight": [1, 3, 3], "h.conv1.bias": [1],
        "g.conv0.weight": [2, 1, 3], "g.conv0.bias": [2],
        "g.upconv0.weight": [1, 2, 2], "g.upconv0.bias": [1],
    }),
    ("fxcls", FXCLS, fwdcls, 5, [1, 6, 6], None, "cross_entropy", {
        "logits.conv0.weight": [3, 1, 3, 3], "logits.conv0.bias": [3],
        "logits.dense0.weight": [5, 48], "logits.dense0.bias": [5],
        "logits.dense1.weight": [3, 5], "logits.dense1.bias": [3],
    }),
    # Added after the others so that their random draws (and fixtures) stay as they were.
    ("fxgroupnorm", FXGROUPNORM, fwdgroupnorm, 3, [2, 6, 5], [4, 6, 5], "mse", {
        "a.conv0.weight": [6, 2, 3, 3], "a.conv0.bias": [6],
        "a.groupnorm0.weight": [6], "a.groupnorm0.bias": [6],
        "y.conv0.weight": [4, 6, 1, 1], "y.conv0.bias": [4],
        "y.groupnorm0.weight": [4], "y.groupnorm0.bias": [4],
    }),
    ("fxsilu", FXSILU, fwdsilu, 3, [2, 12], [2, 12], "mse", {
        "y.conv0.weight": [3, 2, 3], "y.conv0.bias": [3],
        "y.conv1.weight": [2, 3, 3], "y.conv1.bias": [2],
    }),
]

OPTIMIZERS = [
    {"kind": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": False},
    {"kind": "sgd", "lr": 0.05, "momentum": 0.8, "nesterov": True, "weight_decay": 0.01},
    {"kind": "sgd", "lr": 0.1, "momentum": 0.0, "nesterov": False},
    {"kind": "adagrad", "lr": 0.1, "eps": 1e-6},
    {"kind": "rmsprop", "lr": 0.01, "rho": 0.9, "eps": 1e-6},
    {"kind": "adam", "lr": 0.01, "rho1": 0.9, "rho2": 0.999, "eps": 1e-6},
    {"kind": "adam", "lr": 0.01, "rho1": 0.8, "rho2": 0.99, "eps": 1e-6, "weight_decay": 0.1, "clip": 0.5},
]


def is_state(name):
    return name.endswith("running_mean") or name.endswith("running_var")


def loss_fn(kind, y, t):
    if kind == "mse":
        return ((y - t) ** 2).mean()
    if kind == "mae":
        return (y - t).abs().mean()
    return F.cross_entropy(y, t)


def run_steps(fwd, P0, x, t, loss_kind, opt, steps=3):
    P = {k: v.clone() for k, v in P0.items()}
    state = {k: [torch.zeros_like(v), torch.zeros_like(v)] for k, v in P.items()}
    for step in range(1, steps + 1):
        for k, v in P.items():
            v.requires_grad_(not is_state(k))
        loss = loss_fn(loss_kind, fwd(P, x), t)
        names = [k for k in P if not is_state(k)]
        grads = torch.autograd.grad(loss, [P[k] for k in names])
        with torch.no_grad():
            G = dict(zip(names, grads))
            if opt.get("clip") is not None:
                norm = torch.sqrt(sum((g * g).sum() for g in G.values()))
                if norm > opt["clip"]:
                    G = {k: g * (opt["clip"] / norm) for k, g in G.items()}
            wd = opt.get("weight_decay", 0.0)
            for k in names:
                th, g = P[k].detach(), G[k] + wd * P[k].detach()
                s0, s1 = state[k]
                if opt["kind"] == "sgd":
                    s0.mul_(opt["momentum"]).add_(g)
                    d = g + opt["momentum"] * s0 if opt["nesterov"] else s0
                    th = th - opt["lr"] * d
                elif opt["kind"] == "adagrad":
                    s0.add_(g * g)
                    th = th - opt["lr"] * g / (opt["eps"] + s0.sqrt())
                elif opt["kind"] == "rmsprop":
                    s0.mul_(opt["rho"]).add_((1 - opt["rho"]) * g * g)
                    th = th - opt["lr"] * g / (opt["eps"] + s0.sqrt())
                else:
                    s0.mul_(opt["rho1"]).add_((1 - opt["rho1"]) * g)
                    s1.mul_(opt["rho2"]).add_((1 - opt["rho2"]) * g * g)
                    mh = s0 / (1 - opt["rho1"] ** step)
                    vh = s1 / (1 - opt["rho2"] ** step)
                    th = th - opt["lr"] * mh / (opt["eps"] + vh.sqrt())
                P[k] = th.clone()
        for k in P:
            P[k] = P[k].detach()
    return P


def flat(t):
    return t.detach().reshape(-1).tolist()


for name, src, fwd, batch, in_shape, out_shape, loss_kind, shapes in CASES:
    P0 = {}
    for k, s in shapes.items():
        if k.endswith("running_mean"):
            P0[k] = torch.zeros(*s, dtype=DT)
        elif k.endswith("running_var"):
            P0[k] = torch.ones(*s, dtype=DT)
        elif "norm" in k and k.endswith("weight"):
            P0[k] = 1 + p(s, 0.2)
        else:
            P0[k] = p(s)
    x = p([batch] + in_shape, 1.0)
    if loss_kind == "cross_entropy":
        t = torch.randint(0, 3, (batch,))
        target = [float(v) for v in t.tolist()]
        target_shape = [batch]
    else:
        t = p([batch] + out_shape, 1.0)
        target = flat(t)
        target_shape = [batch] + out_shape
    P = {k: v.clone().requires_grad_(not is_state(k)) for k, v in P0.items()}
    y = fwd(P, x)
    loss = loss_fn(loss_kind, y, t)
    names = [k for k in P if not is_state(k)]
    grads = dict(zip(names, torch.autograd.grad(loss, [P[k] for k in names])))
    fixture = {
        "source": src,
        "batch": batch,
        "loss": loss_kind,
        "input": {"shape": [batch] + in_shape, "values": flat(x)},
        "target": {"shape": target_shape, "values": target},
        "params": {k: {"shape": list(v.shape), "values": flat(v)} for k, v in P0.items()},
        "forward": {"shape": list(y.shape), "values": flat(y)},
        "loss_value": loss.item(),
        "grads": {k: flat(g) for k, g in grads.items()},
        "steps": [
            {"optimizer": opt, "params_after": {k: flat(v) for k, v in run_steps(fwd, P0, x, t, loss_kind, opt).items()}}
            for opt in OPTIMIZERS
        ],
    }
    path = os.path.join(OUT, f"reference_{name}.json")
    with open(path, "w") as fh:
        json.dump(fixture, fh)
    print("wrote", path)
