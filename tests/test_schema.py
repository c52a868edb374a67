import pytest

from globmed_edge.data.schema import ChatItem, MCQItem, parse_item
from globmed_edge.errors import DataError

GOOD = {"id": "x-test-0", "dataset": "x", "lang": "sw", "split": "test",
        "question": "Dalili ya malaria ni ipi?", "options": {"A": "Homa", "B": "Kikohozi"},
        "answer": "A", "license": "MIT"}


def test_parse_good_mcq_keeps_extra_fields():
    item = parse_item({**GOOD, "subject": "infectious"})
    assert isinstance(item, MCQItem)
    assert item.answer_index == 0 and item.meta == {"subject": "infectious"}
    assert item.to_dict()["subject"] == "infectious"


def test_split_aliases_are_normalised():
    assert parse_item({**GOOD, "split": "validation"}).split == "dev"


@pytest.mark.parametrize(
    ("patch", "reason"),
    [
        ({"answer": "C"}, "answer 'C' is not among the options"),
        ({"options": {}}, "at least 2 options"),
        ({"options": {"A": "x", "C": "y"}}, "option keys must be A, B"),
        ({"options": {"A": "Homa", "B": "  "}}, "option B is empty"),
        ({"options": ["Homa", "Kikohozi"]}, "must be an object"),
        ({"options": {"A": "Homa", "B": "homa"}}, "same text as option B"),
        ({"lang": "Swahili"}, "not an ISO 639 code"),
        ({"split": "holdout"}, "split 'holdout'"),
        ({"question": ""}, "field 'question' is empty"),
        ({"question": 3}, "must be a string"),
    ],
)
def test_bad_mcq_reasons(patch, reason):
    with pytest.raises(DataError, match=reason):
        parse_item({**GOOD, **patch})


@pytest.mark.parametrize("field", ["id", "dataset", "lang", "split", "question", "answer", "options"])
def test_missing_fields(field):
    obj = dict(GOOD)
    del obj[field]
    with pytest.raises(DataError, match=f"missing field '{field}'"):
        parse_item(obj)


def test_chat_item():
    item = parse_item({"id": "c0", "dataset": "d", "lang": "ar", "split": "train",
                       "messages": [{"role": "user", "content": "ما هي أعراض الملاريا؟"},
                                    {"role": "assistant", "content": "الحمى والقشعريرة."}]})
    assert isinstance(item, ChatItem) and len(item.messages) == 2
    with pytest.raises(DataError, match="no assistant turn"):
        parse_item({"id": "c1", "dataset": "d", "lang": "ar", "split": "train",
                    "messages": [{"role": "user", "content": "x"}]})
    with pytest.raises(DataError, match="role 'doctor'"):
        parse_item({"id": "c2", "dataset": "d", "lang": "ar", "split": "train",
                    "messages": [{"role": "doctor", "content": "x"}, {"role": "assistant", "content": "y"}]})


def test_non_object_record():
    with pytest.raises(DataError, match="must be a JSON object"):
        parse_item(["not", "an", "object"])
