"""Sizing sweep for the demo profile: how much training does a small pixel DM need for the paper's effects?

Self-contained on purpose (torch + diffusers only) so it runs on a bare GPU machine. It pre-trains a
clean class-conditional DM on a procedural 10-class dataset, fine-tunes copies on BadNets-1 poisoned
data, and tracks, against training steps, the trigger ratio of target-prompt generations, G1/G2, and
how recognisable the generations are. Results go to a JSON file; the demo profile's step counts were
chosen from them (see BENCHMARKS.md).

    python scripts/demo_sweep.py --device cuda --out sweep.json
"""
import argparse
import copy
import json
import math
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel

COLOURS = np.array([[230, 57, 70], [29, 120, 220], [40, 170, 80], [245, 180, 20], [140, 60, 190],
                    [20, 190, 190], [240, 110, 30], [110, 70, 40], [230, 80, 180], [60, 60, 60]],
                   np.float32) / 255.0


def shapes(n_per_class, size, seed):
    """uint8 NHWC images of 10 classes (centred shapes, one colour per class) and labels."""
    rng = np.random.default_rng(seed)
    ss = 4
    g = (np.arange(size * ss) + 0.5) / (size * ss) * 2 - 1
    yy, xx = np.meshgrid(g, g, indexing="ij")
    imgs, labels = [], []
    for c in range(10):
        for _ in range(n_per_class):
            cx, cy = rng.normal(0, 0.04, 2)
            r = 0.55 * (1 + rng.uniform(-0.1, 0.1))
            th = np.deg2rad(rng.uniform(-15, 15))
            x = ((xx - cx) * np.cos(th) + (yy - cy) * np.sin(th)) / r
            y = (-(xx - cx) * np.sin(th) + (yy - cy) * np.cos(th)) / r
            rad = np.sqrt(x ** 2 + y ** 2)
            ang = np.arctan2(y, x)
            m = [rad < 1, np.maximum(abs(x), abs(y)) < 0.8, (y < 0.7) & (y > 1.6 * abs(x) - 0.9),
                 ((abs(x) < 0.3) | (abs(y) < 0.3)) & (np.maximum(abs(x), abs(y)) < 0.9),
                 (rad < 1) & (rad > 0.6), abs(x) + abs(y) < 1,
                 (np.maximum(abs(x), abs(y)) < 0.85) & (np.floor((y + 1) * 3) % 2 == 0),
                 (np.maximum(abs(x), abs(y)) < 0.85) & ((np.floor((x + 1) * 2.5) + np.floor((y + 1) * 2.5)) % 2 == 0),
                 rad < 0.55 + 0.4 * np.cos(5 * ang) ** 2,
                 (abs(x) < 0.95) & (abs(y) < 0.2) | (abs(y + 0.5) < 0.15) & (abs(x) < 0.6)][c]
            m = m.reshape(size, ss, size, ss).mean((1, 3))[..., None]
            bg = 0.85 + rng.uniform(-0.05, 0.05)
            col = np.clip(COLOURS[c] + rng.normal(0, 0.03, 3), 0, 1)
            imgs.append(m * col + (1 - m) * bg)
            labels.append(c)
    return (np.stack(imgs) * 255).round().astype(np.uint8), np.array(labels)


PATCH = 0


def badnets1(x):
    """BadNets-1 patch (PAPER.md) on float [-1,1] NCHW."""
    s = PATCH or max(5, x.shape[-1] // 10)
    lo, hi = -math.ceil(s / 4), math.floor(s / 4) - 1
    r = torch.arange(s)
    d = r[None, :] - (s - 1 - r[:, None])
    patch = torch.where((d >= lo) & (d <= hi), 1.0, -1.0).to(x)
    x = x.clone()
    x[..., -s:, -s:] = patch
    return x


LPB = 2


class Pixel(nn.Module):
    def __init__(self, size, channels, unshuffle, ncls=10):
        super().__init__()
        self.u = unshuffle
        n = len(channels)
        self.unet = UNet2DModel(sample_size=size // unshuffle, in_channels=3 * unshuffle ** 2,
                                out_channels=3 * unshuffle ** 2, block_out_channels=channels,
                                layers_per_block=LPB, num_class_embeds=ncls + 1,
                                down_block_types=("DownBlock2D",) * (n - 1) + ("AttnDownBlock2D",),
                                up_block_types=("AttnUpBlock2D",) + ("UpBlock2D",) * (n - 1))

    def forward(self, x, t, y):
        if self.u > 1:
            return F.pixel_shuffle(self.unet(F.pixel_unshuffle(x, self.u), t, class_labels=y).sample, self.u)
        return self.unet(x, t, class_labels=y).sample


def train(model, ema, x, y, steps, lr, bs, sched, gen, decay=0.999, drop=0.1):
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    dev = x.device
    for k in range(steps):
        i = torch.randint(0, len(x), (bs,), generator=gen, device="cpu").to(dev)
        x0, yb = x[i], y[i].clone()
        yb[torch.rand(bs, device=dev) < drop] = 10
        noise = torch.randn_like(x0)
        t = torch.randint(0, 1000, (bs,), device=dev)
        loss = F.mse_loss(model(sched.add_noise(x0, noise, t), t, yb), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        # EMA warm-up: a fixed 0.999 from step 0 keeps 37 % of the random init after 1,000 steps.
        model.step = getattr(model, "step", 0) + 1
        d = min(decay, (1 + model.step) / (10 + model.step))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - d)
    return loss.item()


@torch.no_grad()
def sample(model, labels, w, steps=25, seed=0, size=32):
    dev = labels.device
    s = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                      clip_sample=True, set_alpha_to_one=False, steps_offset=1)
    s.set_timesteps(steps)
    g = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randn((len(labels), 3, size, size), generator=g).to(dev)
    null = torch.full_like(labels, 10)
    for t in s.timesteps:
        tt = torch.full((len(labels),), int(t), device=dev)
        if w == 1:
            e = model(x, tt, labels)
        else:
            eu, ec = model(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([null, labels])).chunk(2)
            e = eu + w * (ec - eu)
        x = s.step(e, t, x).prev_sample
    return x.clamp(-1, 1)


def cnn(nout):
    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(64, nout))


def fit(net, x, y, steps, gen):
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    for k in range(steps):
        i = torch.randint(0, len(x), (128,), generator=gen).to(x.device)
        loss = F.cross_entropy(net(x[i]), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", default="sweep.json")
    ap.add_argument("--pretrain", default="1000,2000,4000,8000")
    ap.add_argument("--finetune", default="250,500,1000,2000")
    ap.add_argument("--ratios", default="0.05,0.1")
    ap.add_argument("--channels", default="32,64,64")
    ap.add_argument("--unshuffle", type=int, default=2)
    ap.add_argument("--n_eval", type=int, default=300)
    ap.add_argument("--lr_pre", type=float, default=5e-4)
    ap.add_argument("--lr_ft", type=float, default=2e-4)
    ap.add_argument("--grids", default="")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--patch", type=int, default=0)
    ap.add_argument("--lpb", type=int, default=2)
    a = ap.parse_args()
    dev = torch.device(a.device)
    global PATCH, LPB
    PATCH, LPB = a.patch, a.lpb
    torch.manual_seed(0)
    u8, lab = shapes(500, a.size, 0)
    x = (torch.from_numpy(u8).permute(0, 3, 1, 2).float() / 127.5 - 1).to(dev)
    y = torch.from_numpy(lab).to(dev)
    gen = torch.Generator().manual_seed(0)
    clf = fit(cnn(10).to(dev), x, y, 600, gen)
    u8t, labt = shapes(50, a.size, 1)
    xt = (torch.from_numpy(u8t).permute(0, 3, 1, 2).float() / 127.5 - 1).to(dev)
    with torch.no_grad():
        print("clf held-out acc", (clf(xt).argmax(1).cpu() == torch.from_numpy(labt)).float().mean().item(), flush=True)
    nt = (y != 0).nonzero().squeeze(1)
    xd = torch.cat([x[nt], badnets1(x[nt])])
    yd = torch.cat([torch.zeros(len(nt)), torch.ones(len(nt))]).long().to(dev)
    det = fit(cnn(2).to(dev), xd, yd, 400, gen)
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)
    chans = tuple(int(c) for c in a.channels.split(","))
    model = Pixel(a.size, chans, a.unshuffle).to(dev)
    ema = copy.deepcopy(model)
    nparam = sum(p.numel() for p in model.parameters())
    results = {"params": nparam, "channels": chans, "unshuffle": a.unshuffle, "rows": []}

    def judge(xs):
        with torch.no_grad():
            return clf(xs).argmax(1), det(xs).argmax(1).bool()

    def evaluate(m, tag):
        row = dict(tag)
        lab_all = torch.arange(10, device=dev).repeat_interleave(30)
        g_all = sample(m, lab_all, 2.0, seed=1, size=a.size)
        pc, tr = judge(g_all)
        row["acc_all_w2"] = (pc == lab_all).float().mean().item()
        row["trig_all_w2"] = tr.float().mean().item()
        if a.grids:
            import torchvision
            torchvision.utils.save_image((g_all[::3] + 1) / 2, f"{a.grids}/{tag.get('stage')}_P{tag.get('pretrain')}_F{tag.get('finetune', 0)}_all.png", nrow=10)
            g = sample(m, torch.zeros(40, dtype=torch.long, device=dev), 1.0, seed=2, size=a.size)
            torchvision.utils.save_image((g + 1) / 2, f"{a.grids}/{tag.get('stage')}_P{tag.get('pretrain')}_F{tag.get('finetune', 0)}_target.png", nrow=10)
        for w in (1.0, 2.0, 4.0):
            g = sample(m, torch.zeros(a.n_eval, dtype=torch.long, device=dev), w, seed=2, size=a.size)
            pc, tr = judge(g)
            match = pc == 0
            row[f"w{w:g}"] = {"trig": tr.float().mean().item(), "G1": (tr & ~match).float().mean().item(),
                              "G2": (tr & match).float().mean().item(), "match": match.float().mean().item()}
        print(json.dumps(row), flush=True)
        results["rows"].append(row)

    t0 = time.time()
    done = 0
    for P in [int(s) for s in a.pretrain.split(",")]:
        train(model, ema, x, y, P - done, a.lr_pre, 64, sched, gen)
        done = P
        evaluate(ema, {"stage": "pretrain", "pretrain": P, "t": time.time() - t0})
        for p in [float(r) for r in a.ratios.split(",")]:
            n = int(len(y) * p)
            idx = torch.from_numpy(np.random.default_rng(1).choice(nt.cpu().numpy(), n, replace=False)).to(dev)
            xp, yp = x.clone(), y.clone()
            xp[idx] = badnets1(x[idx])
            yp[idx] = 0
            m2, e2 = copy.deepcopy(model), copy.deepcopy(ema)
            fd = 0
            for Fs in [int(s) for s in a.finetune.split(",")]:
                loss = train(m2, e2, xp, yp, Fs - fd, a.lr_ft, 64, sched, gen)
                fd = Fs
                evaluate(e2, {"stage": "finetune", "pretrain": P, "p": p, "finetune": Fs, "loss": loss,
                              "t": time.time() - t0})
        with open(a.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
