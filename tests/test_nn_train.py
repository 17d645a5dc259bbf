"""The tiny CNN end to end: data folders, training, the model file and its failure modes, train-tiny and predict."""

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cnnfilter import nn
from cnnfilter.cli import cli
from cnnfilter.nn.data import DataError, load_folder, shift_batch, split

DIGITS = Path(__file__).resolve().parent.parent / "samples" / "digits"


def small_digits(tmp_path, classes=("0", "1", "7"), per_class=12) -> Path:
    """A copy of a few bundled digits: a dataset that trains in well under a second."""
    root = tmp_path / "data"
    for c in classes:
        (root / c).mkdir(parents=True)
        for f in sorted((DIGITS / c).glob("*.png"))[:per_class]:
            (root / c / f.name).write_bytes(f.read_bytes())
    return root


def test_load_folder_reads_classes_and_skips_bad_files(tmp_path):
    """Sorted class names, 0..1 pixels, a corrupt .png skipped with its reason, the most common size kept."""
    root = small_digits(tmp_path, per_class=3)
    (root / "1" / "bad.png").write_bytes(b"not a png at all")
    Image.new("L", (16, 16), 255).save(root / "7" / "big.png")  # resized to the common 8x8
    ds = load_folder(root)
    assert ds.classes == ["0", "1", "7"]
    assert ds.x.shape == (10, 1, 8, 8) and ds.x.dtype == np.float32
    assert 0 <= ds.x.min() and ds.x.max() <= 1
    assert np.bincount(ds.y).tolist() == [3, 3, 4]
    assert [p.name for p, _ in ds.skipped] == ["bad.png"]
    assert "not an image" in ds.skipped[0][1]
    np.testing.assert_allclose(ds.x[ds.paths.index(root / "7" / "big.png")], 1.0)


def test_load_folder_rgb_and_size(tmp_path):
    """--channels 3 and --size give (N, 3, H, W); a grey image becomes three equal channels."""
    root = small_digits(tmp_path, classes=("2", "5"), per_class=2)
    ds = load_folder(root, channels=3, size=(5, 7))
    assert ds.x.shape == (4, 3, 5, 7)
    np.testing.assert_array_equal(ds.x[:, 0], ds.x[:, 2])


@pytest.mark.parametrize(("layout", "message"), [
    ({}, "has no class sub-folders"),
    ({"a": ["x.png"], "b": []}, "class folder .*b' has no images"),
    ({"a": ["x.png"], "b": ["junk.png"]}, "class folder 'b' has no readable images"),
])
def test_bad_dataset_folders(tmp_path, layout, message):
    """No classes, an empty class, a class of only unreadable files: one clear error each."""
    root = tmp_path / "d"
    root.mkdir()
    for cls, files in layout.items():
        (root / cls).mkdir()
        for f in files:
            if f == "junk.png":
                (root / cls / f).write_text("junk")
            else:
                Image.new("L", (4, 4)).save(root / cls / f)
    with pytest.raises(DataError, match=message):
        load_folder(root)


def test_memory_limit_refuses_with_the_estimate(tmp_path):
    """A dataset over --max-memory is refused before loading, and the message gives the size needed."""
    root = small_digits(tmp_path, per_class=2)
    with pytest.raises(DataError, match=r"6 images of 1x64x64 need 0.0938 MiB as float32, over --max-memory 0.000954 MiB"):
        load_folder(root, size=(64, 64), max_memory=1000)


def test_split_is_stratified_and_seeded():
    """20% of every class, the same for the same seed, disjoint and complete."""
    y = np.repeat(np.arange(3), [10, 20, 5])
    tr, va = split(y, 0.2, np.random.default_rng(0))
    assert np.bincount(y[va]).tolist() == [2, 4, 1]
    assert sorted(np.concatenate([tr, va]).tolist()) == list(range(35))
    tr2, va2 = split(y, 0.2, np.random.default_rng(0))
    np.testing.assert_array_equal(va, va2)


def test_shift_batch_translates_and_fills():
    """Every image is a translated copy, the uncovered border filled with the given value."""
    x = np.arange(2 * 1 * 5 * 5, dtype=np.float32).reshape(2, 1, 5, 5)
    out = shift_batch(x, np.random.default_rng(1), np.array([-9.0], np.float32), 1)
    for n in range(2):
        found = False
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                ref = np.full((5, 5), -9.0, np.float32)
                ys, yd = (slice(0, 5 - dy), slice(dy, 5)) if dy >= 0 else (slice(-dy, 5), slice(0, 5 + dy))
                xs, xd = (slice(0, 5 - dx), slice(dx, 5)) if dx >= 0 else (slice(-dx, 5), slice(0, 5 + dx))
                ref[yd, xd] = x[n, 0][ys, xs]
                found |= np.array_equal(out[n, 0], ref)
        assert found


def _trained(tmp_path, seed=0, epochs=3):
    prep = nn.prepare(small_digits(tmp_path), seed=seed)
    net = nn.build("c4k3p1-relu-max2-fc3", prep.input_shape, 3, rng=np.random.default_rng(seed))
    events = list(nn.train(net, prep.x, prep.y, prep.x_val, prep.y_val, epochs=epochs, batch_size=8, seed=seed))
    return prep, net, events


def test_training_lowers_the_loss_and_is_reproducible(tmp_path):
    """A seeded run's loss goes down; the same seed gives the same loss curve and weights."""
    _, net, events = _trained(tmp_path / "a", epochs=10)
    epochs = [e for e in events if isinstance(e, nn.EpochEvent)]
    assert len(epochs) == 10 and epochs[-1].train_loss < epochs[0].train_loss / 2
    assert any(isinstance(e, nn.BatchEvent) for e in events)
    _, net2, events2 = _trained(tmp_path / "b", epochs=10)
    assert [e.train_loss for e in events2 if isinstance(e, nn.EpochEvent)] == [e.train_loss for e in epochs]
    for p, q in zip(net.params(), net2.params()):
        np.testing.assert_array_equal(p, q)


def test_sgd_and_adam_step_like_their_definitions():
    """One SGD-momentum step and two Adam steps, by hand."""
    p = np.array([1.0, -2.0])
    opt = nn.optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.5)
    opt.step([np.array([1.0, 1.0])])
    np.testing.assert_allclose(p, [1 - 0.1 * 1.5, -2 - 0.1 * 0.0])
    opt.step([np.array([1.0, 1.0])])
    g2 = np.array([1.0, 1.0]) + 0.5 * np.array([0.85, -2.0])
    np.testing.assert_allclose(p, np.array([0.85, -2.0]) - 0.1 * (0.9 * np.array([1.5, 0.0]) + g2))
    q = np.array([0.5])
    adam = nn.optim.Adam([q], lr=0.01)
    adam.step([np.array([2.0])])
    np.testing.assert_allclose(q, [0.5 - 0.01], rtol=1e-6)  # the first bias-corrected step is lr * sign(g)


def test_model_round_trip(tmp_path):
    """save_model/load_model give back the weights, classes, normalisation and the same predictions."""
    prep, net, _ = _trained(tmp_path)
    model = nn.Model(net, prep.classes, prep.mean, prep.std, {"epochs": 3})
    path = tmp_path / "m.cnnf"
    nn.save_model(model, path)
    back = nn.load_model(path)
    assert back.classes == ["0", "1", "7"] and back.meta == {"epochs": 3}
    for p, q in zip(net.params(), back.net.params()):
        np.testing.assert_array_equal(p, q)
    x = prep.x[:4] * prep.std[0] + prep.mean[0]
    np.testing.assert_allclose(back.probabilities(x), model.probabilities(x), rtol=1e-6)
    with zipfile.ZipFile(path) as zf:  # data only: a JSON header and .npy arrays
        assert all(n == "header.json" or n.endswith(".npy") for n in zf.namelist())


def _rewrite(src, dst, *, header=None, drop=None, replace=None, extra=None):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            if name == drop:
                continue
            data = zin.read(name)
            if name == "header.json" and header is not None:
                h = json.loads(data)
                h.update(header)
                data = json.dumps(h).encode()
            if replace and name in replace:
                data = replace[name]
            zout.writestr(name, data)
        if extra:
            zout.writestr(*extra)


def _npy(arr):
    import io

    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def test_version_1_files_still_load(tmp_path, rng):
    """A version 1 file (the architecture string, no graph) loads into the same network as the version 2 file."""
    prep, net, _ = _trained(tmp_path)
    v2 = tmp_path / "v2.cnnf"
    nn.save_model(nn.Model(net, prep.classes, prep.mean, prep.std), v2)
    header = json.loads(zipfile.ZipFile(v2).read("header.json"))
    assert header["version"] == 2 and [n["op"] for n in header["graph"]["nodes"]][:3] == ["Conv", "Relu", "MaxPool"]
    v1 = tmp_path / "v1.cnnf"
    _rewrite(v2, v1, header={"version": 1, "graph": None})
    x = rng.random((3, *net.input_shape)).astype(np.float32)
    a, b = nn.load_model(v1).net, nn.load_model(v2).net
    assert a.names == b.names == net.names and a.arch == net.arch
    np.testing.assert_array_equal(a.forward(x), b.forward(x))
    np.testing.assert_array_equal(a.forward(x), net.forward(x))


@pytest.mark.parametrize(("damage", "message"), [
    ("truncate", "not a cnnfilter model \\(not a zip archive, or truncated\\)"),
    ("text", "not a cnnfilter model \\(not a zip archive, or truncated\\)"),
    ("missing", "no such file"),
    ({"version": 3}, "format version 3, but this cnnfilter reads version 2; upgrade cnnfilter"),
    ({"format": "other"}, "not a cnnfilter model \\(wrong format name in the header\\)"),
    ({"version": 1, "arch": "c4k3p1-bogus-fc3"}, "the architecture does not build"),
    ({"mean": [0.1, 0.2]}, "the normalisation \\(mean/std\\) does not match the input channels"),
    ({"classes": ["0", "1"]}, "the network's last node must be a dense layer of 2 outputs"),
    ({"version": 1, "classes": ["0", "1"]}, "the network.s last node must be a dense layer of 2 outputs"),
    ({"graph": None}, "the header has no graph"),
    ("graph-op", "the graph does not build: node 'relu1' \\(Exec\\): operator not one of Conv"),
    ("graph-cycle", "the graph does not build: the graph is not acyclic"),
    ("graph-path", "the graph's node name '../../etc/passwd' is not a name"),
    ("graph-attr", "the graph does not build: node 'conv1' \\(Conv\\): pads \\[1, 1, 1\\] is not 4 integers"),
    ("graph-missing", "the graph does not build: node 'pool1' \\(MaxPool\\) reads 'nowhere'"),
    ("graph-output", "the graph's output 'conv1' is not its last node in topological order"),
    ("drop", "parameter 'fc1.bias' is missing"),
    ("shape", "parameter 'conv1.weight' has shape \\(3, 1, 3, 3\\); the architecture needs \\(4, 1, 3, 3\\)"),
    ("nan", "parameter 'conv1.bias' holds NaN or infinite values"),
    ("pickle", "parameter 'conv1.bias' has dtype object; expected float"),  # refused from its header, never unpickled
    ("extra", "unexpected member 'evil.py'"),
    ("noheader", "not a cnnfilter model \\(no header.json\\)"),
])
def test_damaged_models_are_refused_with_the_reason(tmp_path, damage, message):
    """Truncated, tampered, wrong-version and non-model files give one error naming the problem."""
    prep, net, _ = _trained(tmp_path)
    good = tmp_path / "good.cnnf"
    nn.save_model(nn.Model(net, prep.classes, prep.mean, prep.std), good)
    bad = tmp_path / "bad.cnnf"
    if damage == "truncate":
        bad.write_bytes(good.read_bytes()[:-100])
    elif damage == "text":
        bad.write_text("hello")
    elif damage == "missing":
        bad = tmp_path / "nope.cnnf"
    elif isinstance(damage, dict):
        _rewrite(good, bad, header=damage)
    elif damage.startswith("graph-"):
        graph = json.loads(zipfile.ZipFile(good).read("header.json"))["graph"]
        nodes = {n["name"]: n for n in graph["nodes"]}
        if damage == "graph-op":
            nodes["relu1"]["op"] = "Exec"
        elif damage == "graph-cycle":
            nodes["conv1"]["inputs"] = ["fc1"]
        elif damage == "graph-path":
            nodes["conv1"]["name"] = nodes["conv1"]["outputs"][0] = "../../etc/passwd"
        elif damage == "graph-attr":
            nodes["conv1"]["attrs"]["pads"] = [1, 1, 1]
        elif damage == "graph-output":  # nodes listed backwards, and the output named after the file's last
            graph["nodes"] = graph["nodes"][::-1]
            graph["output"] = "conv1"
        else:
            nodes["pool1"]["inputs"] = ["nowhere"]
        _rewrite(good, bad, header={"graph": graph})
    elif damage == "drop":
        _rewrite(good, bad, drop="fc1.bias.npy")
    elif damage == "shape":
        _rewrite(good, bad, replace={"conv1.weight.npy": _npy(np.zeros((3, 1, 3, 3), np.float32))})
    elif damage == "nan":
        _rewrite(good, bad, replace={"conv1.bias.npy": _npy(np.array([0, np.nan, 0, 0], np.float32))})
    elif damage == "pickle":
        _rewrite(good, bad, replace={"conv1.bias.npy": _npy(np.array([{"a": 1}] * 4, dtype=object))})
    elif damage == "extra":
        _rewrite(good, bad, extra=("evil.py", "print('hi')"))
    elif damage == "noheader":
        _rewrite(good, bad, drop="header.json")
    with pytest.raises(nn.ModelError, match=f"cannot load model '.*': {message}"):
        nn.load_model(bad)


def test_bundled_digits_model_classifies_the_digits():
    """The shipped model loads by name and is right on at least 97% of the bundled digits."""
    model = nn.load_model(nn.resolve_model("digits"))
    assert model.input_shape == (1, 8, 8) and model.classes == [str(d) for d in range(10)]
    files = sorted(DIGITS.glob("*/*.png"))[::7]
    probs = nn.predict(model, files)
    truth = np.array([int(f.parent.name) for f in files])
    assert (probs.argmax(axis=1) == truth).mean() >= 0.97


def test_predict_accepts_arrays_and_pillow_images():
    """A uint8 array, a float array in 0..1 and a Pillow image of the same digit give the same answer."""
    model = nn.load_model(nn.resolve_model("digits"))
    img = Image.open(DIGITS / "3" / "0003.png")
    arr = np.asarray(img)
    p = nn.predict(model, [img, arr, arr / 255.0])
    np.testing.assert_allclose(p[0], p[1], rtol=1e-5)
    np.testing.assert_allclose(p[0], p[2], rtol=1e-5)
    assert model.classes[int(p[0].argmax())] == "3"


def run(args):
    return CliRunner().invoke(cli, args)


def test_train_tiny_cli_writes_model_log_and_plot(tmp_path):
    """train-tiny prints the layer table and one line per epoch, writes the model, the CSV log and the curves."""
    data = small_digits(tmp_path)
    out = tmp_path / "m.cnnf"
    res = run(["train-tiny", str(data), "-o", str(out), "--arch", "c4k3p1-relu-max2-fc3", "--epochs", "2",
               "--log", str(tmp_path / "m.csv"), "--plot", str(tmp_path / "m.png"), "--checkpoint"])
    assert res.exit_code == 0, res.output
    assert "conv1    Conv2d(1->4, 3x3, stride 1, padding 1)" in res.stderr
    assert "epoch 2/2  train loss" in res.stderr and "wrote" in res.stderr
    model = nn.load_model(out)
    assert model.meta["epochs"] == 2 and model.meta["seed"] == 0
    lines = (tmp_path / "m.csv").read_text().splitlines()
    assert lines[0] == "epoch,train_loss,train_acc,val_loss,val_acc,seconds" and len(lines) == 3
    assert Image.open(tmp_path / "m.png").size == (960, 380)


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--arch", "c4k3-bogus"], 2, "architecture token 2 'bogus' is not one of"),
    (["--arch", "c4k3-fc5"], 2, "ends with fc5 but the data has 3 classes"),
    (["--size", "0"], 2, "'0' is not N or HxW with positive sizes"),
    (["--max-memory", "lots"], 2, "'lots' is not a size such as 512MiB"),
    (["--max-memory", "10"], 1, "over --max-memory"),
])
def test_train_tiny_errors(tmp_path, args, code, message):
    """Bad options are usage errors (exit 2), data that cannot be used failures (exit 1); one line each."""
    data = small_digits(tmp_path, per_class=2)
    res = run(["train-tiny", str(data), "-o", str(tmp_path / "m.cnnf"), "--epochs", "1", *args])
    assert res.exit_code == code
    assert message in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "m.cnnf").exists()


def test_train_tiny_usage(tmp_path):
    """--arch help explains the grammar; no DATA or no -o are usage errors; an existing model is a failure (1)."""
    assert "c<out>k<k>[s<s>][p<p>][d<d>][g<g>]" in run(["train-tiny", "--arch", "help"]).output
    assert "missing DATA" in run(["train-tiny"]).stderr
    assert "missing -o/--output MODEL" in run(["train-tiny", str(tmp_path)]).stderr
    (tmp_path / "m.cnnf").write_text("x")
    res = run(["train-tiny", str(tmp_path), "-o", str(tmp_path / "m.cnnf")])
    assert res.exit_code == 1 and "exists; use --overwrite" in res.stderr


def test_predict_cli_table_json_and_failures(tmp_path):
    """predict: a table, JSON lines for scripts, and a bad file reported with exit 1 while the rest go on."""
    bad = tmp_path / "bad.png"
    bad.write_text("nope")
    good = str(DIGITS / "7" / "0007.png")
    res = run(["predict", "digits", good, "--top-k", "2"])
    assert res.exit_code == 0 and "7" in res.output.splitlines()[1]
    res = run(["predict", "digits", good, str(bad), "--json"])
    assert res.exit_code == 1
    first, second = (json.loads(line) for line in res.stdout.splitlines())
    assert "cnnfilter: 1 done, 1 failed\n  failed: " in res.stderr and res.stderr.count("bad.png") == 2
    one = run(["predict", "digits", str(bad)])  # one image: its error line alone, as convolve's
    assert one.exit_code == 1 and one.stderr.startswith("cnnfilter: error: cannot read") and "done" not in one.stderr
    assert first["class"] == "7" and len(first["top"]) == 3
    assert second["image"] == str(bad) and "not an image" in second["error"]


def test_predict_cli_on_an_imagefolder_prints_accuracy_and_confusion(tmp_path):
    """A folder of class sub-folders gives the accuracy and a confusion matrix (JSON with --json)."""
    data = small_digits(tmp_path, classes=("1", "4"), per_class=5)
    res = run(["predict", "digits", str(data), "--json"])
    assert res.exit_code == 0
    *images, out = (json.loads(line) for line in res.stdout.splitlines())  # a line per image, then the summary
    assert len(images) == 10 and {im["truth"] for im in images} == {"1", "4"}
    assert all(Path(im["image"]).parent.name == im["truth"] and im["class"] == im["top"][0]["class"] for im in images)
    conf = np.array(out["confusion"])
    assert conf.shape == (10, 10) and conf.sum() == 10 and conf[1].sum() == 5 and conf[4].sum() == 5
    assert out["accuracy"] == np.trace(conf) / 10
    res = run(["predict", "digits", str(data)])
    assert "accuracy" in res.output and "confusion matrix" in res.output


def test_predict_cli_errors_lists_the_misclassified_files(tmp_path):
    """--errors: after the accuracy, the files whose prediction is not their folder's class (JSON: only those lines,
    then the summary); without class folders it is a usage error."""
    data = small_digits(tmp_path, classes=("1", "4"), per_class=4)
    stray = data / "1" / "a_seven.png"
    stray.write_bytes((DIGITS / "7" / "0007.png").read_bytes())
    res = run(["predict", "digits", str(data), "--errors"])
    assert res.exit_code == 0 and "misclassified: 1" in res.stdout
    (line,) = [ln for ln in res.stdout.splitlines() if "a_seven.png" in ln]
    assert str(stray) in line and line.split()[1:3] == ["1", "7"]
    res = run(["predict", "digits", str(data), "--errors", "--json"])
    *wrong, summary = (json.loads(ln) for ln in res.stdout.splitlines())
    assert [w["image"] for w in wrong] == [str(stray)] and wrong[0]["truth"] == "1" and wrong[0]["class"] == "7"
    assert summary["wrong"] == 1 and summary["images"] == 9
    res = run(["predict", "digits", str(stray), "--errors"])
    assert res.exit_code == 2 and "--errors needs a folder of class sub-folders" in res.stderr


def test_predict_cli_small_probabilities_globs_and_conversion_warnings(tmp_path):
    """Probabilities too small for three decimals read <0.001 (JSON keeps six significant digits); a quoted glob
    is expanded; an image the model must convert or resize gets one warning saying what was done."""
    res = run(["predict", "digits", str(DIGITS / "3" / "0003.png"), "--top-k", "3"])
    assert res.exit_code == 0 and "<0.001" in res.stdout and "0.000" not in res.stdout
    res = run(["predict", "digits", str(DIGITS / "3" / "0003.png"), "--json"])
    assert all(t["probability"] > 0 for t in json.loads(res.stdout)["top"])
    res = run(["predict", "digits", str(DIGITS / "7" / "000*.png"), "-q"])
    assert res.exit_code == 0 and "0007.png" in res.stdout and "no such file" not in res.stderr
    photo = tmp_path / "photo.png"
    Image.fromarray(np.full((40, 60, 3), 200, np.uint8)).save(photo)
    res = run(["predict", "digits", str(photo), str(photo)])
    assert res.exit_code == 0
    warnings = [ln for ln in res.stderr.splitlines() if "warning" in ln]
    assert warnings[0].endswith("is 60x40 RGB, the model takes 8x8 greyscale: converted to greyscale, resized to "
                                "8x8 (bilinear)")
    assert warnings[1:] == ["cnnfilter: warning: 1 more image(s) converted or resized the same way"]
    assert "warning" not in run(["predict", "digits", str(photo), "--json"]).stderr


def test_predict_cli_model_errors(tmp_path):
    """A missing or broken model is one line, exit 1."""
    res = run(["predict", str(tmp_path / "none.cnnf"), str(DIGITS / "7" / "0007.png")])
    assert res.exit_code == 1 and "cannot load model" in res.stderr and "no such file" in res.stderr


def test_ctrl_c_writes_the_best_model_so_far(tmp_path, monkeypatch):
    """Interrupted after two epochs: exit 130, and the model file holds the best epoch so far."""
    original = nn.Trainer.run

    def interrupted(self):
        for ev in original(self):
            yield ev
            if isinstance(ev, nn.EpochEvent) and ev.epoch == 2:
                raise KeyboardInterrupt

    monkeypatch.setattr(nn.Trainer, "run", interrupted)
    data = small_digits(tmp_path)
    out = tmp_path / "m.cnnf"
    res = run(["train-tiny", str(data), "-o", str(out), "--arch", "c4k3p1-relu-fc3", "--epochs", "9"])
    assert res.exit_code == 130
    assert "interrupted after epoch 2; wrote the best model so far" in res.stderr
    meta = nn.load_model(out).meta
    assert meta["epochs"] == 2 and meta["epoch_saved"] in (1, 2)


def test_train_tiny_log_or_plot_in_a_missing_folder_is_refused_before_training(tmp_path):
    """--log/--plot into a folder that does not exist fail before training, in one line (not an internal error
    after the first epoch)."""
    data = small_digits(tmp_path, per_class=2)
    for opt in ("--log", "--plot"):
        res = run(["train-tiny", str(data), "-o", str(tmp_path / "m.cnnf"), "--epochs", "1",
                   opt, str(tmp_path / "nowhere" / "x")])
        assert res.exit_code == 1 and "does not exist" in res.stderr and "internal error" not in res.stderr
        assert not (tmp_path / "m.cnnf").exists()


def test_train_tiny_log_write_failure_is_one_line(tmp_path):
    """A log that cannot be written (its name is a folder) is a one-line failure, exit 1."""
    data = small_digits(tmp_path, per_class=2)
    (tmp_path / "log.csv").mkdir()
    res = run(["train-tiny", str(data), "-o", str(tmp_path / "m.cnnf"), "--epochs", "1", "--arch", "c2k3-fc3",
               "--log", str(tmp_path / "log.csv")])
    assert res.exit_code == 1 and "cannot write" in res.stderr and "internal error" not in res.stderr


def test_predict_on_a_folder_without_images_is_an_error(tmp_path):
    """An empty folder gives 'no images found' (exit 2), not a silent success."""
    (tmp_path / "empty").mkdir()
    res = run(["predict", "digits", str(tmp_path / "empty")])
    assert res.exit_code == 2 and "no images found" in res.stderr


def test_val_folder_and_val_split_together_are_refused(tmp_path):
    """--val and an explicit --val-split (even the default value) are two answers to one question."""
    data = small_digits(tmp_path, per_class=2)
    res = run(["train-tiny", str(data), "-o", str(tmp_path / "m.cnnf"), "--val", str(data), "--val-split", "0.2"])
    assert res.exit_code == 2 and "--val and --val-split" in res.stderr


def test_split_never_takes_a_whole_class():
    """Even at --val-split 0.9 a class of one or two images keeps one for training."""
    y = np.array([0, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2])
    tr, va = split(y, 0.9, np.random.default_rng(0))
    assert set(y[tr]) == {0, 1, 2} and np.bincount(y[va], minlength=3).tolist() == [0, 1, 9]


def test_model_with_an_absurd_input_shape_is_refused(tmp_path):
    """A tampered header asking for a gigantic input is refused before anything is allocated."""
    prep, net, _ = _trained(tmp_path)
    good = tmp_path / "good.cnnf"
    nn.save_model(nn.Model(net, prep.classes, prep.mean, prep.std), good)
    _rewrite(good, tmp_path / "bad.cnnf", header={"input_shape": [1, 100000, 100000]})
    with pytest.raises(nn.ModelError, match="input shape"):
        nn.load_model(tmp_path / "bad.cnnf")


def test_split_in_place_and_chunked_statistics_match_numpy():
    """The in-place permutation equals fancy indexing, and the chunked per-channel mean/std equal numpy's."""
    from cnnfilter.nn.train import _channel_stats, _permute

    rng = np.random.default_rng(3)
    x = rng.normal(5, 3, (1000, 3, 4, 5)).astype(np.float32)
    order = rng.permutation(1000)
    want = x[order]
    _permute(x, order)
    np.testing.assert_array_equal(x, want)
    mean, std = _channel_stats(x, chunk=77)
    np.testing.assert_allclose(mean, x.mean(axis=(0, 2, 3), dtype=np.float64), rtol=1e-6)
    np.testing.assert_allclose(std, x.std(axis=(0, 2, 3), dtype=np.float64), rtol=1e-6)


def test_label_smoothing_matches_its_definition_and_gradient(rng):
    """Loss ``(1-s) * nll + s * mean_k(-log p_k)`` (PyTorch's label_smoothing); the gradient by finite differences."""
    from cnnfilter.nn.layers import cross_entropy

    z = rng.standard_normal((5, 4))
    y = rng.integers(0, 4, 5)
    s = 0.2
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    ref = np.mean((1 - s) * -logp[np.arange(5), y] + s * -logp.mean(axis=1))
    loss, _, grad = cross_entropy(z, y, s)
    assert abs(loss - ref) < 1e-12
    eps = 1e-6
    for i, k in ((0, 0), (3, 2), (4, 3)):
        zp = z.copy()
        zp[i, k] += eps
        zm = z.copy()
        zm[i, k] -= eps
        num = (cross_entropy(zp, y, s)[0] - cross_entropy(zm, y, s)[0]) / (2 * eps)
        assert abs(num - grad[i, k]) < 1e-7


def test_cosine_schedule_patience_and_the_best_epoch(tmp_path):
    """cosine: the rate falls from the base towards 0; patience stops after that many epochs without a better one."""
    prep = nn.prepare(small_digits(tmp_path), seed=0)
    net = nn.build("c4k3p1-relu-max2-fc3", prep.input_shape, 3, rng=np.random.default_rng(0))
    tr = nn.Trainer(net, prep.x, prep.y, prep.x_val, prep.y_val, epochs=4, batch_size=8, lr=0.01,
                    schedule="cosine")
    rates = []
    for ev in tr.run():
        if isinstance(ev, nn.BatchEvent) and ev.batch == 1:
            rates.append(tr.optimizer.lr)
    np.testing.assert_allclose(rates, [0.01 * 0.5 * (1 + np.cos(np.pi * e / 4)) for e in range(4)])
    net = nn.build("c4k3p1-relu-max2-fc3", prep.input_shape, 3, rng=np.random.default_rng(0))
    tr = nn.Trainer(net, prep.x, prep.y, prep.x_val, prep.y_val, epochs=50, batch_size=8, patience=2)
    epochs = [ev for ev in tr.run() if isinstance(ev, nn.EpochEvent)]
    assert tr.stopped_early and len(epochs) == tr.best_epoch + 2 < 50
    with pytest.raises(ValueError, match="schedule"):
        nn.Trainer(net, prep.x, prep.y, schedule="linear")


def test_affine_augmentation_identity_mirror_and_fill(rng):
    from cnnfilter.nn.data import affine_batch

    x = rng.standard_normal((6, 2, 7, 9)).astype(np.float32)
    fill = np.array([-3.0, 5.0], np.float32)
    still = affine_batch(x, np.random.default_rng(1), fill, shift=0, rotate=0, scale=0)
    np.testing.assert_array_equal(still, x)
    mirrored = affine_batch(x, np.random.default_rng(1), fill, shift=0, rotate=0, scale=0, flip=True)
    flipped = [np.array_equal(m, a[:, :, ::-1]) for m, a in zip(mirrored, x)]
    kept = [np.array_equal(m, a) for m, a in zip(mirrored, x)]
    assert all(f or k for f, k in zip(flipped, kept)) and any(flipped) and any(kept)
    moved = affine_batch(x, np.random.default_rng(2), fill, shift=0.45, rotate=0, scale=0)
    corner = moved[:, :, [0, 0, -1, -1], [0, -1, 0, -1]]  # far shifts uncover corners: the fill, per channel
    assert ((corner == fill[None, :, None]) | np.isclose(corner, corner)).all()
    assert (np.isclose(moved[:, 0], -3.0).sum() > 0) and (np.isclose(moved[:, 1], 5.0).sum() > 0)


def test_train_tiny_keeps_the_best_epoch_unless_no_best(tmp_path):
    data = small_digits(tmp_path, per_class=6)
    for flag, kept in (([], "best"), (["--no-best"], "last")):
        out = tmp_path / f"{kept}.cnnf"
        res = run(["train-tiny", str(data), "-o", str(out), "--epochs", "6", "--arch", "c4k3p1-relu-fc3", *flag])
        assert res.exit_code == 0, res.stderr
        meta = nn.load_model(out).meta
        assert f"keeps the {kept} epoch" in res.stderr and meta["augment"] == "affine"
        if kept == "last":
            assert meta["epoch_saved"] == 6
        else:
            vals = [line for line in res.stderr.splitlines() if line.startswith("epoch ") and "*" in line]
            assert meta["epoch_saved"] == int(vals[-1].split()[1].split("/")[0])


def test_plot_ticks_are_round_and_the_log_scale_draws():
    """Axis ticks at 1-2-5 steps that cover the data (the plot's 0.486, 0.972 and 52 % are gone); a log axis for
    the loss at 1, 2 and 5 times powers of ten."""
    from cnnfilter.nn.plot import plot_curves
    from cnnfilter.pictures import log_ticks, nice_step, nice_ticks

    assert nice_ticks(0, 0.972) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(0.52, 1.0) == [0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    assert nice_ticks(0, 2.31) == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    for lo, hi in ((0, 0.0037), (3, 1234.5), (-2.5, 7.1), (0.999, 1.0)):
        ticks = nice_ticks(lo, hi)
        step = ticks[1] - ticks[0]
        mantissa = step / 10 ** np.floor(np.log10(step))
        assert ticks[0] <= lo and ticks[-1] >= hi and len(ticks) <= 7
        assert any(abs(mantissa - m) < 1e-6 for m in (1, 2, 5)) and nice_step(hi - lo) == pytest.approx(step)
    assert log_ticks(0.012, 2.3) == [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0]
    assert log_ticks(1e-5, 3) == [1e-05, 0.0001, 0.001, 0.01, 0.1, 1.0, 10.0]
    history = [nn.EpochEvent(e, 12, 2.0 / e, min(0.3 + 0.06 * e, 1), 2.2 / e, 0.25 + 0.06 * e, 0.1, False)
               for e in range(1, 13)]
    flat, logged = plot_curves(history), plot_curves(history, log=True)
    assert flat.size == logged.size == (960, 380)
    assert np.abs(np.asarray(flat, np.int16) - np.asarray(logged, np.int16)).sum() > 0


def test_batchnorm_state_in_a_model_file_is_checked(tmp_path):
    """A BatchNorm's running variance must not be negative, and its epsilon must be in (0, 1): a tampered file
    is refused with the reason."""
    net = nn.build("c4k3p1-bn-relu-fc3", (1, 6, 6), 3)
    good = tmp_path / "good.cnnf"
    nn.save_model(nn.Model(net, ["a", "b", "c"], np.zeros(1, np.float32), np.ones(1, np.float32)), good)
    bad = tmp_path / "bad.cnnf"
    _rewrite(good, bad, replace={"bn1.running_var.npy": _npy(np.array([1, -1, 1, 1], np.float32))})
    with pytest.raises(nn.ModelError, match="parameter 'bn1.running_var' holds a negative variance"):
        nn.load_model(bad)
    graph = json.loads(zipfile.ZipFile(good).read("header.json"))["graph"]
    next(n for n in graph["nodes"] if n["name"] == "bn1")["attrs"]["epsilon"] = -1
    _rewrite(good, bad, header={"graph": graph})
    with pytest.raises(nn.ModelError, match="node 'bn1' \\(BatchNormalization\\): epsilon -1 is not in \\(0, 1\\)"):
        nn.load_model(bad)


def test_predict_says_the_files_that_failed_before_a_model_that_fails_part_way(tmp_path, monkeypatch):
    """A model that fails after some files could not be read: those files' failures are still reported (a summary
    and a line each) before the model's own line, exit 1."""
    import cnnfilter.nn as nn_module

    def broken(model, paths, batch=None, *, notes=None):
        yield paths[0], None, f"{str(paths[0])!r}: not an image"
        raise ValueError("node 'x' (Conv) failed: boom")

    monkeypatch.setattr(nn_module, "predict_files", broken)
    good = str(DIGITS / "7" / "0007.png")
    res = run(["predict", "digits", good, good])
    assert res.exit_code == 1
    assert "cnnfilter: 1 failed\n  failed: " in res.stderr and "the model failed: node 'x'" in res.stderr
