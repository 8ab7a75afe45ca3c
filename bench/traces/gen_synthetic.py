#!/usr/bin/env python3
"""Synthetic allocation traces shaped like the workloads memd is judged on but
has not seen (ANCHORS.md): BERT with random shapes, a server swapping three
models, and a high-resolution segmentation net; plus smaller pools (a
segmentation net at 1/2 and 1/4 resolution), vision-like model sequences, and
weights-only loads whose peak is the end of loading (the case the map-ahead
budget exists for). Deterministic (fixed seeds). They check that the
allocator is not tuned to the two shared traces.

usage: gen_synthetic.py OUTDIR
"""
import gzip, os, random, sys

class W:
    def __init__(self, path):
        self.f = gzip.open(path, "wt"); self.next = 0; self.live = {}
    def a(self, size):
        size = max(512, (size + 511) // 512 * 512)
        i = self.next; self.next += 1; self.live[i] = size
        self.f.write(f"a {i} {size}\n"); return i
    def fr(self, i):
        del self.live[i]; self.f.write(f"f {i}\n")
    def close(self): self.f.close()

def bert_random(path, seed=1):
    r = random.Random(seed); w = W(path)
    hidden, layers = 1024, 24
    weights = [w.a(hidden * hidden * 2 * r.choice([1, 3, 4])) for _ in range(layers * 4)]
    for step in range(400):
        b, s = r.randint(1, 32), r.choice(range(16, 513, 8))
        acts = []
        for l in range(layers):
            x = w.a(b * s * hidden * 2)
            qkv = w.a(3 * b * s * hidden * 2)
            att = w.a(b * 16 * s * s * 2)
            for t in (qkv, att): w.fr(t)
            ff = w.a(b * s * hidden * 4 * 2)
            w.fr(ff)
            acts.append(x)
            if len(acts) > 2: w.fr(acts.pop(0))
        for t in acts: w.fr(t)
    for t in weights: w.fr(t)
    w.close()

def model_swap(path, seed=2):
    r = random.Random(seed); w = W(path)
    models = [[r.choice([1, 2, 4, 8, 16, 32]) * 1 << 20 for _ in range(n)] for n in (300, 120, 600)]
    for rnd in range(9):
        m = models[rnd % 3]
        ws = [w.a(sz + r.randint(0, 64) * 512) for sz in m]
        for it in range(30):
            tmp = [w.a(r.randint(1, 64) << 20) for _ in range(r.randint(5, 40))]
            r.shuffle(tmp)
            for t in tmp: w.fr(t)
        r.shuffle(ws)
        for t in ws: w.fr(t)
    w.close()

def segmentation_hires(path, seed=3):
    r = random.Random(seed); w = W(path)
    weights = [w.a(r.choice([64, 256, 1024, 4096]) * 1024) for _ in range(400)]
    for img in range(12):
        H = r.choice([1024, 1536, 2048])
        feats = []
        c = 64; h = H
        for stage in range(5):
            for blk in range(3):
                t = w.a(c * h * h * 2)
                tmp = w.a(c * h * h * 2 * 2)
                w.fr(tmp)
                feats.append(t)
            c *= 2; h //= 2
        while feats:
            f = feats.pop()
            up = w.a(64 * H * H // 4)
            w.fr(f); w.fr(up)
    for t in weights: w.fr(t)
    w.close()

def seg_small(path, seed, scale):
    # segmentation at lower resolution: pools of hundreds of MiB
    r = random.Random(seed); w = W(path)
    weights = [w.a(r.choice([64, 256, 1024, 4096]) * 1024) for _ in range(r.randint(100, 400))]
    for img in range(12):
        H = r.choice([x // scale for x in (1024, 1536, 2048)])
        feats = []; c = 64; h = H
        for stage in range(5):
            for blk in range(3):
                t = w.a(c * h * h * 2); tmp = w.a(c * h * h * 2 * 2); w.fr(tmp); feats.append(t)
            c *= 2; h //= 2
        while feats:
            f = feats.pop(); up = w.a(64 * H * H // 4); w.fr(f); w.fr(up)
    for t in weights: w.fr(t)
    w.close()

def vision_like(path, seed):
    # models created, run at a few batch sizes, dropped (like vision_mix)
    r = random.Random(seed); w = W(path)
    for m in range(4):
        nw = r.randint(100, 400)
        ws = [w.a(int(r.choice([4, 16, 64, 256, 1024, 2304, 4608, 9216]) * 1024 * r.uniform(0.5, 1.5))) for _ in range(nw)]
        ch = r.choice([64, 96, 128]); res = r.choice([112, 160, 224])
        for bs in (1, 8, 32):
            for it in range(3):
                live = []
                c, h = ch, res
                for layer in range(r.randint(10, 30)):
                    x = w.a(bs * c * h * h * 2)
                    t = w.a(bs * c * h * h * 2 * r.choice([1, 2, 4]))
                    w.fr(t); live.append(x)
                    if len(live) > 2: w.fr(live.pop(0))
                    if r.random() < 0.2 and h > 7: c *= 2; h //= 2
                for x in live: w.fr(x)
        r.shuffle(ws)
        for t in ws: w.fr(t)
    w.close()

def weights_only(path, seed):
    # peak right at the end of loading (activations tiny): cold start is the peak
    r = random.Random(seed); w = W(path)
    ws = [w.a(r.choice([64, 256, 1024, 4096, 8192]) * 1024) for _ in range(r.randint(200, 600))]
    for it in range(50):
        t = w.a(r.randint(1, 64) * 4096); w.fr(t)
    for t in ws: w.fr(t)
    w.close()

if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "."
    os.makedirs(out, exist_ok=True)
    bert_random(os.path.join(out, "trace_synth_bert_random.txt.gz"))
    model_swap(os.path.join(out, "trace_synth_model_swap.txt.gz"))
    segmentation_hires(os.path.join(out, "trace_synth_segmentation.txt.gz"))
    for s in (21, 22):
        seg_small(os.path.join(out, f"trace_synth_segsmall4_s{s}.txt.gz"), s, 4)
        seg_small(os.path.join(out, f"trace_synth_segsmall2_s{s}.txt.gz"), s, 2)
        vision_like(os.path.join(out, f"trace_synth_visionlike_s{s}.txt.gz"), s)
        weights_only(os.path.join(out, f"trace_synth_weights_s{s}.txt.gz"), s)
