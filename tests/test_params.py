"""params.yaml validation: the repo's own file passes; errors name the key."""

from pathlib import Path

import pytest

from usseg import params as P
from usseg.errors import UssegError

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow/schemas"


def repo_params():
    """params.yaml with its active preset's experiments as a list."""
    return P.select_preset(P.load_yaml(REPO / "params.yaml"))


def test_repo_params_are_valid():
    P.validate(P.load_yaml(REPO / "params.yaml"), SCHEMA)
    params = repo_params()
    for preset in params["presets"]:
        P.validate(P.select_preset({**params, "preset": preset}), SCHEMA)


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda p: p["features"].update(bogus=1), "bogus"),
        (lambda p: p["features"].update(batch_size="eight"), "features.batch_size"),
        (lambda p: p["experiments"][0].update(method="nope"), "nope"),
        (lambda p: p["experiments"][0].update(dataset="imagenet"), "imagenet"),
        (lambda p: p["experiments"][0].update(backbone="resnet9000"), "resnet9000"),
        (lambda p: p.update(unknown_group={}), "unknown_group"),
        (
            lambda p: p["data"]["datasets"]["voc2012"]["archives"]["trainval"].update(checksum="md5:abc"),
            "data.datasets.voc2012.archives.trainval.checksum: 'md5:abc' does not match",
        ),
        (lambda p: p["data"]["datasets"]["voc2012"].update(max_expansion=0.5), "voc2012.max_expansion: 0.5"),
        (lambda p: p["refine"].update(crf=False), "refine.crf: False is not one of .*write none, not off"),
        (lambda p: p["resources"]["threads"].update(kmean=2), "kmean"),
        (lambda p: p["resources"]["threads"].update(kmeans=0), "resources.threads.kmeans"),
    ],
)
def test_errors_name_the_problem(mutate, needle):
    params = repo_params()
    mutate(params)
    with pytest.raises(UssegError, match=needle):
        P.validate(params, SCHEMA)


def test_overrides_merge_per_experiment():
    params = repo_params()
    exp = {**params["experiments"][0], "overrides": {"kmeans": {"k": 9}}}
    merged = P.experiment_params(params, exp)
    assert merged["kmeans"]["k"] == 9
    assert merged["kmeans"]["niter"] == params["kmeans"]["niter"]
    assert params["kmeans"]["k"] is None


def test_unknown_preset_is_named():
    with pytest.raises(UssegError, match="nosuch"):
        P.select_preset({**repo_params(), "preset": "nosuch"})


def _with_override(overrides):
    params = P.select_preset(repo_params())
    params["experiments"] = [{**params["experiments"][0], "overrides": overrides}]
    return params


@pytest.mark.parametrize(
    "overrides, needles",
    [
        # an unknown key used to reach the job as {"k": null, "kk": 3} and run with the default k
        ({"kmeans": {"kk": 3}}, ["experiments.kmeans-demo.overrides.kmeans.kk", "'kk' was unexpected"]),
        # an unknown group used to be dropped silently
        ({"kmeanz": {"k": 3}}, ["experiments.kmeans-demo.overrides.kmeanz", "not a group this experiment reads"]),
        # another method's group is not read by this experiment's jobs
        ({"datus2": {"k": 3}}, ["experiments.kmeans-demo.overrides.datus2"]),
        # a wrong type used to pass and crash later with a bare TypeError
        ({"kmeans": {"k": "three"}}, ["experiments.kmeans-demo.overrides.kmeans.k", "'three' is not of type"]),
        ({"kmeans": {"k": 1}}, ["experiments.kmeans-demo.overrides.kmeans.k", "less than the minimum of 2"]),
        ({"refine": {"presets": {"stego": {"iterations": "ten"}}}},
         ["experiments.kmeans-demo.overrides.refine.presets.stego.iterations"]),
        ({"features": {"image_size": 230}}, ["experiments.kmeans-demo.overrides.features.image_size",
                                              "not a multiple of dinov2_vits14_imgfocus's patch size 14"]),
    ],
)
def test_bad_overrides_name_experiment_key_and_file(overrides, needles):
    with pytest.raises(UssegError) as err:
        P.validate(_with_override(overrides), SCHEMA)
    message = str(err.value)
    assert message.startswith("params.yaml: experiment 'kmeans-demo' is invalid"), message
    for needle in needles:
        assert needle in message


def test_error_names_the_configfile_that_holds_it(tmp_path):
    """With snakemake's --configfile, the message names that file, not params.yaml."""
    extra = tmp_path / "my-overrides.yaml"
    extra.write_text(
        "experiments:\n"
        "  - {name: kmeans-x, method: kmeans, dataset: demo, backbone: dinov2_vits14_imgfocus,\n"
        "     overrides: {kmeans: {kk: 3}}}\n"
    )
    files = [REPO / "params.yaml", extra]
    with pytest.raises(UssegError, match=rf"^{extra}: experiment 'kmeans-x' is invalid") as err:
        P.validate(P.select_preset(P.load_params(files)), SCHEMA, files)
    assert "experiments.kmeans-x.overrides.kmeans.kk" in str(err.value)
    # a bad group value in the configfile is attributed to it too
    extra.write_text("kmeans: {niter: zero}\n")
    with pytest.raises(UssegError, match=rf"^{extra} is invalid"):
        P.validate(P.select_preset(P.load_params(files)), SCHEMA, files)


def test_features_resolve_per_experiment_and_key_their_store():
    """global < backbone < dataset < experiment overrides; the store key follows the result."""
    params = repo_params()
    params["backbones"]["dinov2_vits14_imgfocus"]["features"] = {"image_size": 280, "facet": "value"}
    params["data"]["datasets"]["demo"]["features"] = {"image_size": 336}
    base = {"method": "kmeans", "dataset": "demo", "backbone": "dinov2_vits14_imgfocus"}
    params["experiments"] = [
        {**base, "name": "a"},
        {**base, "name": "b", "overrides": {"kmeans": {"k": 3}}},
        {**base, "name": "c", "overrides": {"features": {"image_size": 448}}},
    ]
    P.validate(params, SCHEMA)
    exps = P.resolve_experiments(params)
    assert exps["a"]["params"]["features"] == {"image_size": 336, "facet": "value", "batch_size": 8, "device": "auto"}
    assert exps["c"]["params"]["features"]["image_size"] == 448
    assert exps["a"]["features_key"] == exps["b"]["features_key"]  # kmeans params do not touch features
    assert exps["a"]["features_key"].startswith("336px-value-")
    assert exps["c"]["features_key"].startswith("448px-value-")
    assert exps["a"]["setup"] == {"image_size": 336} and exps["c"]["setup"] == {"image_size": 448}
    # the dataset's and backbone's own settings reach prepare / weights without the features block
    assert "features" not in exps["a"]["params"]["dataset"] and "features" not in exps["a"]["params"]["backbone"]


def test_seeds_expand_into_one_run_per_seed():
    params = repo_params()
    base = {"method": "kmeans", "dataset": "demo", "backbone": "dinov2_vits14_imgfocus"}
    params["experiments"] = [
        {**base, "name": "km", "seeds": [3, 5], "overrides": {"kmeans": {"k": 4}}},
        {**base, "name": "single"},
    ]
    P.validate(params, SCHEMA)
    exps = P.resolve_experiments(params)
    assert list(exps) == ["km-seed3", "km-seed5", "single"]
    assert [exps[n]["params"]["kmeans"]["seed"] for n in exps] == [3, 5, params["kmeans"]["seed"]]
    assert exps["km-seed5"]["params"]["kmeans"]["k"] == 4  # its other overrides stay
    assert (exps["km-seed3"]["seed_group"], exps["km-seed3"]["seed"]) == ("km", 3)
    assert "seed_group" not in exps["single"]
    assert exps["km-seed3"]["params_hash"] != exps["km-seed5"]["params_hash"]
    params["experiments"].append({**base, "name": "km-seed5"})
    with pytest.raises(UssegError, match=r"\['km-seed5'\] generated by the seeds of \['km'\] are also used"):
        P.validate(params, SCHEMA)
    params["experiments"] = [{**base, "name": "km", "seeds": [1]}]
    with pytest.raises(UssegError, match=r"experiments.0.seeds: \[1\] is too short"):
        P.validate(params, SCHEMA)


def test_paper_preset_protocols():
    """Image size per dataset protocol, datus2 official graph at 224, context_aware's train split and init."""
    params = P.select_preset({**repo_params(), "preset": "paper"})
    exps = P.resolve_experiments(params)
    size = {n: e["setup"]["image_size"] for n, e in exps.items()}
    assert size["kmeans-voc2012"] == 448 and size["multilevel-coco81-dinov2_vitb14"] == 448
    assert size["kmeans-cocostuff27"] == 320 and size["kmeans-suim"] == 224
    assert {size[n] for n in exps if n.startswith("datus2-")} == {224}
    assert exps["datus2-suim-k8"]["params"]["datus2"]["center"] is False
    assert exps["datus2-suim-centered"]["params"]["datus2"]["center"] is True
    assert all(e["params"]["evaluate"]["matching"] == "hungarian" for e in exps.values())
    ca = exps["context_aware-cocostuff27"]["setup"]
    assert ca == {"image_size": 320, "train_split": "train", "init": "checkpoint dino_resnet50.pth"}
    assert exps["context_aware-cocostuff27-vit"]["setup"]["init"] == "frozen dino_vits8"
    stuff = exps["context_aware-cocostuff15"]["params"]
    assert stuff["context_aware"]["k"] == 15 and stuff["evaluate"]["protocols"] == ["stuff15"]
    # the demo trains on the split it evaluates, from random init, and says so
    demo = P.resolve_experiments(P.select_preset({**repo_params(), "preset": "demo"}))
    assert demo["context_aware-demo"]["setup"]["train_split"] == "val (= evaluation split)"
    assert demo["context_aware-demo"]["setup"]["init"] == "random"


def test_validate_cli_reads_configfiles(tmp_path, capsys):
    from usseg.cli import main

    extra = tmp_path / "o.yaml"
    extra.write_text("experiments:\n  - {name: k, method: kmeans, dataset: demo, backbone: dinov2_vits14_imgfocus,\n"
                     "     overrides: {kmeanz: {}}}\n")
    code = main(["validate", "--file", str(REPO / "params.yaml"), "--configfile", str(extra),
                 "--schema-dir", str(SCHEMA)])
    assert code == 2
    assert f"{extra}: experiment 'k' is invalid" in capsys.readouterr().err


def test_experiments_name_a_preset_whose_defaults_each_experiment_extends():
    raw = P.load_yaml(REPO / "params.yaml")
    assert raw["experiments"] == "demo"
    exps = {e["name"]: e for e in P.select_preset(raw)["experiments"]}
    assert exps["kmeans-demo"] == {"name": "kmeans-demo", "method": "kmeans", "dataset": "demo",
                                   "backbone": "dinov2_vits14_imgfocus"}
    assert exps["kmeans-demo-crf"]["overrides"] == {"refine": {"crf": "stego"}}
    paper = {e["name"]: e for e in P.select_preset({**raw, "preset": "paper"})["experiments"]}
    assert paper["datus2-suim-k10"]["backbone"] == "dino_vitb8" and len(paper) == 53
    with pytest.raises(UssegError, match="params experiments: unknown preset 'nosuch'"):
        P.select_preset({**raw, "experiments": "nosuch"})


def test_dvc_set_param_rewrites_exactly_one_line(tmp_path):
    """`dvc exp run -S kmeans.niter=60` rewrites params.yaml with DVC's own function: the
    presets, comments and every other value survive, and the result still validates."""
    from dvc.utils.hydra import apply_overrides

    original = (REPO / "params.yaml").read_text().splitlines()
    copy = tmp_path / "params.yaml"
    copy.write_text("\n".join(original) + "\n")
    apply_overrides(str(copy), ["kmeans.niter=60"])
    rewritten = copy.read_text().splitlines()
    assert len(rewritten) == len(original)
    changed = [(a, b) for a, b in zip(original, rewritten, strict=True) if a != b]
    assert changed == [("  niter: 50", "  niter: 60")]
    params = P.load_yaml(copy)
    P.validate(params, SCHEMA)
    assert params["kmeans"]["niter"] == 60 and params["refine"]["crf"] == "none"


def test_duplicate_experiment_name_stops_naming_file_line_and_key(tmp_path):
    """PyYAML keeps the last of two equal keys: the first experiment was silently dropped (#18.1)."""
    extra = tmp_path / "dup.yaml"
    extra.write_text(
        "presets:\n"
        "  demo:\n"
        "    experiments:\n"
        "      kmeans-tiny: {method: kmeans}\n"
        "      kmeans-tiny: {method: kmeans, overrides: {kmeans: {k: 3}}}\n"
    )
    with pytest.raises(UssegError) as err:
        P.load_params([REPO / "params.yaml", extra])
    assert str(err.value).startswith(f"{extra}:5:7: duplicate key 'kmeans-tiny' (first at line 4)")


def test_yaml_syntax_error_names_file_line_and_column(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("features:\n  image_size: [224\n")
    with pytest.raises(UssegError, match=rf"^{bad}:3:1: expected ',' or '\]'.*starts at line 2, column 15"):
        P.load_yaml(bad)


class _Settings:
    """The two fields of Snakemake's ``workflow.config_settings`` that param_sources reads."""

    def __init__(self, configfiles, config):
        self.configfiles, self.config = configfiles, config


def test_snakemake_sources_are_in_merge_order_so_a_configfile_is_blamed(tmp_path):
    """Snakemake lists --configfile before the Snakefile's params.yaml in workflow.configfiles:
    every error was blamed on params.yaml, and on the first experiment (#18.4)."""
    size = tmp_path / "size.yaml"
    size.write_text("features:\n  image_size: 225\n")
    sources = P.param_sources(REPO / "params.yaml", _Settings([size], {}))
    assert sources == [str(REPO / "params.yaml"), str(size)]
    params = P.load_params(sources)
    with pytest.raises(UssegError) as err:
        P.validate(params, SCHEMA, sources)
    message = str(err.value)
    assert message.startswith(f"{size}: features.image_size: 225 is not a multiple of dinov2_vits14_imgfocus's "
                              "patch size 14 (breaks experiments kmeans-demo, kmeans-demo-crf,"), message
    # a value from --config is blamed on --config
    sources = P.param_sources(REPO / "params.yaml", _Settings([], {"features": {"batch_size": "x"}}))
    assert sources[-1] == ("--config", {"features": {"batch_size": "x"}})
    params = P.deep_merge(P.load_yaml(REPO / "params.yaml"), {"features": {"batch_size": "x"}})
    with pytest.raises(UssegError, match=r"^--config is invalid:\n  --config: params features.batch_size"):
        P.validate(params, SCHEMA, sources)
    # an experiment override in a configfile's preset entry is blamed on that file
    over = tmp_path / "over.yaml"
    over.write_text("presets:\n  demo:\n    experiments:\n      kmeans-demo: {overrides: {kmeans: {k: 1}}}\n")
    files = [REPO / "params.yaml", over]
    with pytest.raises(UssegError, match=rf"^{over}: experiment 'kmeans-demo' is invalid:\n  "
                                         r"experiments.kmeans-demo.overrides.kmeans.k: 1 is less"):
        P.validate(P.load_params(files), SCHEMA, files)


def test_validate_refuses_a_folder_dataset_without_masks_and_missing_weights(tmp_path):
    """Both passed validate and failed jobs later, the first as dataset 'folder' (#18.6, #18.7)."""
    params = repo_params()
    params["data"]["datasets"]["mine"] = {"adapter": "folder", "split": "val", "images": str(tmp_path)}
    params["experiments"] = [{"name": "k", "method": "kmeans", "dataset": "mine", "backbone": "dinov2_vits14_imgfocus"}]
    with pytest.raises(UssegError, match=r"params data.datasets.mine: a folder dataset without `masks` has no "
                                         r"ground truth, so experiment 'k' could not be evaluated"):
        P.validate(params, SCHEMA)
    params = repo_params()
    params["backbones"]["dino_vits16"] = {"weights": str(tmp_path / "nope.pth")}
    with pytest.raises(UssegError, match=rf"params backbones.dino_vits16.weights: {tmp_path}/nope.pth is not a file"):
        P.validate(params, SCHEMA)


def test_a_boolean_for_a_word_says_how_yaml_read_it():
    params = repo_params()
    params["experiments"][0]["overrides"] = {"evaluate": {"matching": False}}
    with pytest.raises(UssegError, match=r"YAML 1.1 reads a bare off/no as the boolean False: quote the word"):
        P.validate(params, SCHEMA)
