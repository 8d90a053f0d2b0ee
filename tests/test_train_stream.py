"""TrainDataStream: the stream is a function of (seed, position) only, bad records are replaced
deterministically, and a stream restored from its state continues it."""
import itertools

import numpy as np
import pytest

from mdetr_d2.data import BadRecordBudgetError, BadRecordError, TrainDataStream

RECORDS = [{"image_id": i, "width": 8 if i % 3 else 6, "height": 6 if i % 3 else 8}
           for i in range(11)]
BAD = {4, 9}


def mapper(record):
    if record["image_id"] in BAD:
        raise BadRecordError(f"record image_id={record['image_id']}: field 'file_name': broken")
    return {**record, "augmentation": float(np.random.rand())}


def _stream(**kwargs):
    options = dict(batch_size=3, seed=5, max_bad_records=2,
                   sources=[(0, "a"), (6, "b")])
    return TrainDataStream(RECORDS, mapper, **{**options, **kwargs})


def _batches(stream, n):
    return [[(d["image_id"], d["augmentation"]) for d in batch]
            for batch in itertools.islice(iter(stream), n)]


@pytest.mark.parametrize("grouping", [False, True])
def test_stream_does_not_depend_on_workers_and_resumes(grouping, caplog):
    reference = _stream(aspect_ratio_grouping=grouping)
    batches = _batches(reference, 8)  # 24+ samples: past the first epoch of 11 records
    assert sorted(i for i, _ in itertools.chain(*batches[:3])) != list(range(9))  # shuffled
    assert not BAD & {i for i, _ in itertools.chain(*batches)}  # bad records replaced
    assert sorted(reference.bad_records) == sorted(BAD)
    assert "Skipped training record dataset 'a' index 4: record image_id=4" in caplog.text
    assert "dataset 'b' index 3: record image_id=9" in caplog.text  # index within its dataset

    assert _batches(_stream(aspect_ratio_grouping=grouping, num_workers=2), 8) == batches
    partial = _stream(aspect_ratio_grouping=grouping)
    _batches(partial, 3)
    resumed = _stream(aspect_ratio_grouping=grouping, num_workers=2)
    resumed.load_state_dict(partial.state_dict())
    assert _batches(resumed, 5) == batches[3:]
    assert resumed.bad_records.keys() <= reference.bad_records.keys()


def test_stream_gives_up_when_every_record_fails():
    def broken(record):
        raise BadRecordError("image root is wrong")

    stream = TrainDataStream(RECORDS, broken, batch_size=2, seed=0, max_bad_records=100)
    with pytest.raises(BadRecordBudgetError, match="16 records in a row failed at stream position"):
        next(iter(stream))
