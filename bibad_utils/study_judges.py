"""The judges of a :class:`bibad_utils.stages.Study`: the clean classifier (does a generation show the
prompt's class?) and one trigger detector per trigger kind (does it carry the trigger?), trained on the
study's real training images, cached in its store, and applied to generated sets (:meth:`StudyJudges.judge`);
and, as an independent second instrument, the training-free trigger template of each kind
(:meth:`StudyJudges.template`, :mod:`bibad_utils.judges.template`).

A component of ``Study`` (``study.judges``): it reads the study's ``cfg``, ``store``, ``seed``, ``device``,
``progress``, ``train_set``, ``test_set``, ``data_key``, ``target`` and ``trigger(kind)``.
"""

from __future__ import annotations

import copy

from bibad_utils import store as st
from bibad_utils.cells import GenSet
from bibad_utils.content_judges import CLEAN_JUDGE, content_choice, judge_specs, predictions
from bibad_utils.data import to_float, to_uint8
from bibad_utils.judges import (JUDGE_KEYS, evaluate_judge, features, holdout_split, is_warp_kind, load_classifier, predict,
                                save_classifier, train_classifier, train_trigger_detector, train_warp_detector,
                                warp_check)
from bibad_utils.judges.profile import judge_settings, warp_settings
from bibad_utils.judges import PHOTOMETRIC_KEYS
from bibad_utils.judges.template import TriggerTemplate, corrupted, template_check


JUDGED_STAGE = "insights_judged"  # the cached decisions on a cell's generations (the stage's name predates the class)
# a detector's decision: its P(trigger) above this (the argmax of its two classes)
TRIGGER_THRESHOLD = 0.5


class StudyJudges:
    """The judges of one study (``study.judges``): trained once per (judges settings, seed, data), cached in
    the study's store, applied to generations."""

    def __init__(self, study):
        self.study = study
        self._judged: dict = {}
        self._templates: dict = {}  # kind -> calibrated template (None: no pixel pattern), for the Study's life
        self._template_reports: dict = {}  # kind -> its template_check report

    def params(self) -> dict:
        return {"judges": judge_settings(self.study.cfg.judges), "seed": self.study.seed}

    def _judge_kwargs(self) -> dict:
        j = self.study.cfg.judges
        return {k: j[k] for k in JUDGE_KEYS if k in j}

    def classifier(self):
        """The clean classifier (content judge), trained on the clean real training set; cached."""
        def build(art):
            model, history = train_classifier(self.study.train_set, seed=self.study.seed, device=self.study.device,
                                              progress=self.study.progress, **self._judge_kwargs())
            report = evaluate_judge(model, self.study.test_set, device=self.study.device)
            save_classifier(model, art.dir / "model", meta={"history": history, "report": report})
            st.save_json(art.dir / "report.json", report)

        path = self.study.store.cached(*self.spec("classifier"), build, device=str(self.study.device))
        return load_classifier(path / "model", device=self.study.device)

    def classifier_report(self) -> dict:
        self.classifier()
        return st.load_json(self.study.store.path(*self.key("classifier")) / "report.json")

    def key(self, what: str) -> tuple[str, str]:
        """(stage, artifact key) of the clean classifier (``what="classifier"``) or a trigger kind's detector."""
        stage, params, inputs = self.spec(what)
        return stage, st.artifact_key(stage, params, inputs)

    def spec(self, what: str) -> tuple[str, dict, list[str]]:
        """(stage, parameters, input keys) of the artifact of the clean classifier (``what="classifier"``) or
        of the detector of trigger kind ``what``. A warp trigger's detector
        (:mod:`bibad_utils.judges.warp_detector`) adds its recipe (:func:`warp_settings`) and, when it mixes
        generations in, the key of the clean pre-trained DM's generation sets (made first if missing)."""
        if what == "classifier":
            return "judge_classifier", self.params(), [self.study.data_key]
        params = {**self.params(), "trigger_kind": what, "trigger": self.study.cfg.triggers.get(what)}
        inputs = [self.study.data_key]
        if is_warp_kind(what):
            params["warp_recipe"] = warp_settings(self.study.cfg.judges)
            if self._warp_generations_used():
                inputs.append(self.study.generation_key(None))
        return "judge_detector", params, inputs

    def _warp_generations_used(self) -> bool:
        """Whether the warp detector mixes a clean DM's generations into its batches: ``judges.wanet_generated``
        above 0 and a clean pre-trained DM (its all-class set is drawn before any judge is trained, and is
        not the set chapter 04 checks the judges on, the clean control's)."""
        return warp_settings(self.study.cfg.judges)["generated_fraction"] > 0 and self.study.pretrain_key is not None

    def cached(self, what: str) -> bool:
        """Whether the clean classifier (``"classifier"``) or the detector of trigger kind ``what`` is in the store."""
        return self.study.store.exists(*self.key(what))

    def detector(self, kind: str):
        """The binary trigger detector of trigger ``kind`` (clean vs triggered non-target real images); a
        warp trigger's (WaNet) follows its own recipe (:meth:`_warp_detector`)."""
        def build(art):
            if is_warp_kind(kind):
                return self._warp_detector(kind, art)
            kw = self._judge_kwargs()
            model = train_trigger_detector(self.study.train_set, self.study.trigger(kind), exclude_class=self.study.target,
                                           seed=self.study.seed, device=self.study.device, progress=self.study.progress, **kw)
            report = evaluate_judge(model, self.study.test_set, trigger=self.study.trigger(kind), exclude_class=self.study.target,
                                    device=self.study.device)
            save_classifier(model, art.dir / "model", meta={"report": report})
            st.save_json(art.dir / "report.json", report)

        path = self.study.store.cached(*self.spec(kind), build, device=str(self.study.device))
        return load_classifier(path / "model", device=self.study.device)

    def _warp_detector(self, kind: str, art) -> None:
        """Train, check and save the detector of warp trigger ``kind`` into ``art``: the recipe of
        :func:`~bibad_utils.judges.train_warp_detector` with the profile's judges settings (``wanet_detector``:
        the field's matched filter, or the network for ``wanet_epochs`` epochs without blur or noise), and, when generations are used, the clean pre-trained DM's all-class set
        split by :func:`~bibad_utils.judges.holdout_split`. ``report.json``: :func:`~bibad_utils.judges.warp_check`
        on the real non-target test images, and under ``generated`` the same on the held-out generations
        (stored as uint8; None without generations)."""
        recipe = warp_settings(self.study.cfg.judges)
        kw = {k: v for k, v in self._judge_kwargs().items() if k not in ("epochs", "blur", "noise")}
        trigger = self.study.trigger(kind)
        generated = held = None
        if self._warp_generations_used():
            gen = self.study.generations(None)[("all", self.study.guidance_all)]
            train_idx, held_idx = holdout_split(len(gen.images), self.study.seed, recipe["holdout"])
            generated, held = gen.images[train_idx], gen.images[held_idx]
        model = train_warp_detector(self.study.train_set, trigger, generated=generated, exclude_class=self.study.target,
                                    seed=self.study.seed, device=self.study.device, progress=self.study.progress,
                                    epochs=recipe["epochs"], random_warps=recipe["random_warps"],
                                    generated_fraction=recipe["generated_fraction"], method=recipe["method"], **kw)
        report = warp_check(model, self.study.test_set, trigger, exclude_class=self.study.target, seed=self.study.seed + 1,
                            device=self.study.device)
        report["generated"] = None if held is None else {
            "source": f"clean pre-trained DM, all-class set, w = {self.study.guidance_all:g}",
            "n_train": len(generated), **warp_check(model, held, trigger, seed=self.study.seed + 2, quantize=True,
                                                     device=self.study.device)}
        save_classifier(model, art.dir / "model", meta={"report": report})
        st.save_json(art.dir / "report.json", report)

    def detector_report(self, kind: str) -> dict:
        self.detector(kind)
        return st.load_json(self.study.store.path(*self.key(kind)) / "report.json")

    def judge(self, gen: GenSet, trigger_kind: str) -> dict:
        """The decisions on one generated set of the study (:meth:`judged`, cached): ``trigger`` (bool [N], the
        detector of ``trigger_kind`` fires: P(trigger) > :data:`TRIGGER_THRESHOLD`), ``pred`` (int64 [N], the
        chosen content judge's class), ``match`` (pred == the prompt's class), ``p_trigger``, ``pred_trained``."""
        return self.judged(gen.cell, trigger_kind)[(gen.set_name, float(gen.guidance))]

    def _photometric(self) -> dict:
        return {k: self.study.cfg.judges.get(k, 0.0) for k in PHOTOMETRIC_KEYS}

    def template(self, kind: str) -> TriggerTemplate | None:
        """The training-free template of trigger ``kind``, its threshold set on the real clean training
        images with the judges' photometric corruptions (:data:`~bibad_utils.judges.template.TEMPLATE_FALSE_ALARM`
        of them above it); None when the trigger has no pixel pattern (a warp). Computed in seconds, kept
        for the life of the Study."""
        if kind not in self._templates:
            tpl = TriggerTemplate.of(self.study.trigger(kind))
            self._templates[kind] = None if tpl is None else tpl.calibrate(
                corrupted(self.study.train_set.images, self._photometric(), self.study.seed))
        return self._templates[kind]

    def template_report(self, kind: str) -> dict | None:
        """:func:`~bibad_utils.judges.template.template_check` of :meth:`template` on the real test set
        with the judges' photometric corruptions: every clean test image, and the non-target ones with the
        trigger pasted before the corruption (as the detector's report); None without a template. Kept for
        the life of the Study beside the template (a copy is returned)."""
        tpl = self.template(kind)
        if tpl is not None and kind not in self._template_reports:
            test, p = self.study.test_set, self._photometric()
            keep = test.labels != self.study.target
            triggered = to_uint8(self.study.trigger(kind).apply(to_float(test.images[keep])))
            self._template_reports[kind] = template_check(tpl, corrupted(test.images, p, self.study.seed + 1),
                                                          corrupted(triggered, p, self.study.seed + 2))
        return copy.deepcopy(self._template_reports.get(kind))

    def judged(self, cell, detector: str, gens: dict | None = None) -> dict:
        """Decisions of the judges on every generation set of ``cell`` (cached in the store).

        Returns ``{(set_name, w): {"trigger": bool [N], "p_trigger": float32 [N] (detector's P(trigger)),
        "pred": int64 [N] (classifier's class), "match": bool [N] (pred == prompt's class),
        "labels": int64 [N]}}``; the all-class set also has ``"features"``: float32 ``[N, D]`` penultimate
        features of the clean classifier (for FD-clf). ``gens``: the cell's ``self.study.generations(cell)`` when
        the caller has them already (loaded here otherwise).
        """
        choice = content_choice(self.study)
        memo = (cell, detector, choice["chosen"])
        if memo in self._judged:  # read once per study and content judge: chapters and the explorer ask per set
            return self._judged[memo]
        gens = self.study.generations(cell) if gens is None else gens
        params = {**self.params(), "detector": detector, "trigger": self.study.cfg.triggers.get(detector)}
        # the detector's own key: a detector trained with another recipe never reuses these judgments
        inputs = [self.study.generation_key(cell), self.study.data_key, self.key(detector)[1]]

        def build(art):
            clf, det = self.classifier(), self.detector(detector)
            for (name, w), gen in gens.items():
                folder = art.dir / f"{name}_w{w:g}"
                folder.mkdir()
                pred, _ = predict(clf, gen.images, device=self.study.device)
                _, p_trig = predict(det, gen.images, device=self.study.device)
                st.save_array(folder / "pred.npy", pred)
                st.save_array(folder / "p_trigger.npy", p_trig[:, 1])
                if name == "all":
                    st.save_array(folder / "features.npy", features(clf, gen.images, device=self.study.device))

        path = self.study.store.cached(JUDGED_STAGE, params, inputs, build, device=str(self.study.device))
        other = None
        if choice["chosen"] != CLEAN_JUDGE:  # the external judge decides M; the trained one's reading is kept
            spec = next(j for j in judge_specs(self.study) if j.name == choice["chosen"])
            other = predictions(self.study, spec, self.study.generation_key(cell),
                                {f"{name}_w{w:g}": gen.images for (name, w), gen in gens.items()})
        out = {}
        for (name, w), gen in gens.items():
            folder = path / f"{name}_w{w:g}"
            pred = st.load_array(folder / "pred.npy")
            p_trig = st.load_array(folder / "p_trigger.npy")
            rec = {"trigger": p_trig > TRIGGER_THRESHOLD, "p_trigger": p_trig, "pred": pred, "pred_trained": pred,
                   "labels": gen.labels}
            if other is not None:
                rec["pred"] = other[f"{name}_w{w:g}"]
            rec["match"] = rec["pred"] == gen.labels
            if (folder / "features.npy").is_file():
                rec["features"] = st.load_array(folder / "features.npy")
            out[(name, w)] = rec
        self._judged[memo] = out
        return out
