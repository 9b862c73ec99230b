"""The judges of a :class:`bibad_utils.stages.Study`: the clean classifier (does a generation show the
prompt's class?) and one trigger detector per trigger kind (does it carry the trigger?), trained on the
study's real training images, cached in its store, and applied to generated sets (:meth:`JudgesMixin.judge`);
and, as an independent second instrument, the training-free trigger template of each kind
(:meth:`JudgesMixin.template`, :mod:`bibad_utils.judges.template`).

A mixin of ``Study``: it reads the study's ``cfg``, ``store``, ``seed``, ``device``, ``progress``,
``train_set``, ``test_set``, ``data_key``, ``target`` and ``trigger(kind)``.
"""

from __future__ import annotations

import copy

from bibad_utils import store as st
from bibad_utils.cells import GenSet
from bibad_utils.data import to_float, to_uint8
from bibad_utils.judges import (JUDGE_KEYS, evaluate_judge, load_classifier, predict, save_classifier,
                                train_classifier, train_trigger_detector)
from bibad_utils.judges.profile import judge_settings
from bibad_utils.judges import PHOTOMETRIC_KEYS
from bibad_utils.judges.template import TriggerTemplate, corrupted, template_check


class JudgesMixin:
    """The study's judges: trained once per (judges settings, seed, data), cached, applied to generations."""

    def _judge_params(self) -> dict:
        return {"judges": judge_settings(self.cfg["judges"]), "seed": self.seed}

    def _judge_kwargs(self) -> dict:
        j = self.cfg["judges"]
        return {k: j[k] for k in JUDGE_KEYS if k in j}

    def classifier(self):
        """The clean classifier (content judge), trained on the clean real training set; cached."""
        def build(art):
            model, history = train_classifier(self.train_set, arch=self._judge_kwargs().pop("arch"),
                                              seed=self.seed, device=self.device, progress=self.progress,
                                              **{k: v for k, v in self._judge_kwargs().items() if k != "arch"})
            report = evaluate_judge(model, self.test_set, device=self.device)
            save_classifier(model, art.dir / "model", meta={"history": history, "report": report})
            st.save_json(art.dir / "report.json", report)

        path = self.store.cached("judge_classifier", self._judge_params(), [self.data_key], build,
                                 device=str(self.device))
        return load_classifier(path / "model", device=self.device)

    def classifier_report(self) -> dict:
        self.classifier()
        return st.load_json(self.store.path(*self._judge_key("classifier")) / "report.json")

    def _judge_key(self, what: str) -> tuple[str, str]:
        """(stage, artifact key) of the clean classifier (``what="classifier"``) or a trigger kind's detector."""
        if what == "classifier":
            return "judge_classifier", st.artifact_key("judge_classifier", self._judge_params(), [self.data_key])
        params = {**self._judge_params(), "trigger_kind": what, "trigger": self.cfg["triggers"].get(what)}
        return "judge_detector", st.artifact_key("judge_detector", params, [self.data_key])

    def judge_cached(self, what: str) -> bool:
        """Whether the clean classifier (``"classifier"``) or the detector of trigger kind ``what`` is in the store."""
        return self.store.exists(*self._judge_key(what))

    def detector(self, kind: str):
        """The binary trigger detector of trigger ``kind`` (clean vs triggered non-target real images)."""
        params = {**self._judge_params(), "trigger_kind": kind, "trigger": self.cfg["triggers"].get(kind)}

        def build(art):
            kw = self._judge_kwargs()
            model = train_trigger_detector(self.train_set, self.trigger(kind), exclude_class=self.target,
                                           seed=self.seed, device=self.device, progress=self.progress, **kw)
            report = evaluate_judge(model, self.test_set, trigger=self.trigger(kind), exclude_class=self.target,
                                    device=self.device)
            save_classifier(model, art.dir / "model", meta={"report": report})
            st.save_json(art.dir / "report.json", report)

        path = self.store.cached("judge_detector", params, [self.data_key], build, device=str(self.device))
        return load_classifier(path / "model", device=self.device)

    def detector_report(self, kind: str) -> dict:
        self.detector(kind)
        return st.load_json(self.store.path(*self._judge_key(kind)) / "report.json")

    def judge(self, gen: GenSet, trigger_kind: str) -> dict:
        """Judge generated images: ``trigger`` (bool [N], the detector of ``trigger_kind`` fires),
        ``pred`` (int64 [N], the clean classifier's class), ``match`` (pred == the prompt's class)."""
        pred, _ = predict(self.classifier(), gen.images, device=self.device)
        trig, _ = predict(self.detector(trigger_kind), gen.images, device=self.device)
        return {"trigger": trig.astype(bool), "pred": pred, "match": pred == gen.labels}

    def _photometric(self) -> dict:
        return {k: self.cfg["judges"].get(k, 0.0) for k in PHOTOMETRIC_KEYS}

    def template(self, kind: str) -> TriggerTemplate | None:
        """The training-free template of trigger ``kind``, its threshold set on the real clean training
        images with the judges' photometric corruptions (:data:`~bibad_utils.judges.template.TEMPLATE_FALSE_ALARM`
        of them above it); None when the trigger has no pixel pattern (a warp). Computed in seconds, kept
        for the life of the Study."""
        cache = self.__dict__.setdefault("_templates", {})
        if kind not in cache:
            tpl = TriggerTemplate.of(self.trigger(kind))
            cache[kind] = None if tpl is None else tpl.calibrate(
                corrupted(self.train_set.images, self._photometric(), self.seed))
        return cache[kind]

    def template_report(self, kind: str) -> dict | None:
        """:func:`~bibad_utils.judges.template.template_check` of :meth:`template` on the real test set
        with the judges' photometric corruptions: every clean test image, and the non-target ones with the
        trigger pasted before the corruption (as the detector's report); None without a template. Kept for
        the life of the Study beside the template (a copy is returned)."""
        cache = self.__dict__.setdefault("_templates", {})
        if ("report", kind) not in cache:
            tpl = self.template(kind)
            if tpl is None:
                cache[("report", kind)] = None
            else:
                test, p = self.test_set, self._photometric()
                keep = test.labels != self.target
                triggered = to_uint8(self.trigger(kind).apply(to_float(test.images[keep])))
                cache[("report", kind)] = template_check(tpl, corrupted(test.images, p, self.seed + 1),
                                                         corrupted(triggered, p, self.seed + 2))
        return copy.deepcopy(cache[("report", kind)])
