"""GQA and CLEVR question answering: accuracy overall and per answer type, plus submission files
(reference §4.6, §7.6)."""
import json
import logging
import os
from collections import OrderedDict
from typing import Dict, Optional

from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils.file_io import PathManager
from detectron2.utils.logger import log_first_n

from ..structures.qa import clevr_answer_type, load_qa_vocab
from .common import gather_dicts_to_main, log_table

logger = logging.getLogger(__name__)

__all__ = ["GQAEvaluator", "CLEVREvaluator"]


class _QAEvaluator(DatasetEvaluator):
    task_name = ""

    def __init__(self, dataset_name: str, output_dir: Optional[str] = None):
        self._dataset_name = dataset_name
        self._output_dir = output_dir
        self._records: Dict = {}

    def reset(self):
        self._records = {}

    def _key(self, inp):
        raise NotImplementedError

    def _gt_type(self, inp) -> Optional[str]:
        raise NotImplementedError

    def _answer_text(self, qa: Dict) -> str:
        """The predicted answer as text (a model without vocabulary predicts class ids)."""
        return str(qa["answer"])

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            if "qa" not in out:
                raise KeyError(f"{self._dataset_name}: outputs of datapoint {inp.get('image_id')} have no 'qa'")
            qa = out["qa"]
            self._records[self._key(inp)] = {
                "prediction": self._answer_text(qa),
                "pred_type": qa.get("answer_type"),
                "answer": inp.get("answer"),
                "type": self._gt_type(inp),
                "order": inp.get("question_index", inp.get("image_id")),
            }

    def evaluate(self):
        records = gather_dicts_to_main(self._records)
        if records is None:
            return {}
        return self.compute(records)

    def _write_submission(self, records) -> None:
        raise NotImplementedError

    def compute(self, records: Dict) -> "OrderedDict[str, Dict[str, float]]":
        if self._output_dir:
            PathManager.mkdirs(self._output_dir)
            self._write_submission(records)
        labelled = [r for r in records.values() if r["answer"] is not None]
        if not labelled:
            logger.info("%s: no ground-truth answers, only the submission file was written", self._dataset_name)
            return OrderedDict([(self.task_name, {})])
        res: Dict[str, float] = OrderedDict()
        res["accuracy"] = sum(r["prediction"] == r["answer"] for r in labelled) / len(labelled)
        with_types = [r for r in labelled if r["type"] is not None]
        typed = [r for r in with_types if r["pred_type"] is not None]
        if typed:
            res["accuracy_answer_type"] = sum(r["pred_type"] == r["type"] for r in typed) / len(typed)
        for t in sorted({r["type"] for r in with_types}):
            rows = [r for r in with_types if r["type"] == t]
            res[f"accuracy_{t}"] = sum(r["prediction"] == r["answer"] for r in rows) / len(rows)
        log_table(f"{self._dataset_name}: {self.task_name.upper()} accuracy ({len(labelled)} questions)", res)
        return OrderedDict([(self.task_name, res)])


class GQAEvaluator(_QAEvaluator):
    """GQA accuracy (overall, ``accuracy_answer_type`` and per semantic type obj/attr/rel/global/cat from the
    input's ``question_type``) and the submission file ``<output_dir>/<dataset>_gqa_predictions.json``
    (``[{"questionId", "prediction"}]``, the format of the official GQA/EvalAI scorer).

    Inputs read: ``questionId``, ``answer`` (optional), ``question_type``. Outputs read: ``qa`` =
    ``{"answer": str or class id, "answer_type": str (obj/attr/rel/global/cat, or "all" for the single
    head), "confidence": float}``. Class ids (a model built without ``MODEL.MDETR.QA_VOCAB``) are turned
    into answers with the dataset's own vocabularies, metadata ``gqa_answer_vocab_by_type`` (split heads)
    and ``gqa_answer_vocab`` (single head): the files its training targets were encoded with.
    """

    task_name = "gqa"

    def __init__(self, dataset_name: str, output_dir: Optional[str] = None):
        super().__init__(dataset_name, output_dir)
        meta = MetadataCatalog.get(dataset_name)
        self._vocab_files = {
            "by_type": getattr(meta, "gqa_answer_vocab_by_type", None),
            "all": getattr(meta, "gqa_answer_vocab", None),
        }
        self._vocabs: Dict[str, Dict] = {}  # read on the first class id

    def _vocab(self, which: str) -> Dict:
        if which not in self._vocabs:
            path = self._vocab_files[which]
            key = "gqa_answer_vocab_by_type" if which == "by_type" else "gqa_answer_vocab"
            if not path:
                raise ValueError(
                    f"{self._dataset_name}: the model predicts answer ids and the dataset has no "
                    f"metadata {key!r} to read them with; register the dataset with it (the "
                    "gqa_answer2id*.json files) or set MODEL.MDETR.QA_VOCAB"
                )
            self._vocabs[which] = load_qa_vocab(path, "gqa_single" if which == "all" else "gqa")
        return self._vocabs[which]

    def _answer_text(self, qa: Dict) -> str:
        answer = qa["answer"]
        if isinstance(answer, str):
            return answer
        answer_type = qa.get("answer_type")
        if answer_type in (None, "all"):
            vocab = self._vocab("all")["all"]
        else:
            vocab = self._vocab("by_type")[answer_type]
        if int(answer) not in vocab:
            # The heads keep the official GQA sizes; a smaller vocabulary leaves ids without answer.
            log_first_n(
                logging.WARNING,
                f"{self._dataset_name}: predicted {answer_type} answer id {answer} is outside the "
                "dataset's vocabulary (scored as wrong)",
                n=3,
            )
            return f"<answer id {answer}>"
        return vocab[int(answer)]

    def _key(self, inp):
        return str(inp.get("questionId", inp["image_id"]))

    def _gt_type(self, inp):
        return inp.get("question_type")

    def _write_submission(self, records):
        path = os.path.join(self._output_dir, f"{self._dataset_name}_gqa_predictions.json")
        subm = [{"questionId": k, "prediction": r["prediction"]} for k, r in records.items()]
        with PathManager.open(path, "w") as f:
            json.dump(subm, f)
        logger.info("GQA predictions (%d questions) written to %s", len(subm), path)


class CLEVREvaluator(_QAEvaluator):
    """CLEVR accuracy (overall, ``accuracy_answer_type``, per answer type binary/attribute/number derived from
    the ground-truth answer) and ``<output_dir>/<dataset>_clevr_predictions.txt``: one answer per line in
    question order (``question_index`` when given, else ``image_id``), the official CLEVR test format.

    Inputs read: ``image_id``, ``answer`` (optional), ``question_index`` (optional). Outputs read: ``qa`` =
    ``{"answer": str, "answer_type": str (binary/attribute/number), "confidence": float}``.
    """

    task_name = "clevr"

    def _key(self, inp):
        return inp.get("question_index", inp["image_id"])

    def _gt_type(self, inp):
        return clevr_answer_type(inp["answer"]) if inp.get("answer") is not None else None

    def _write_submission(self, records):
        path = os.path.join(self._output_dir, f"{self._dataset_name}_clevr_predictions.txt")
        ordered = sorted(records.values(), key=lambda r: r["order"])
        with PathManager.open(path, "w") as f:
            f.write("".join(r["prediction"] + "\n" for r in ordered))
        logger.info("CLEVR predictions (%d questions) written to %s", len(ordered), path)
