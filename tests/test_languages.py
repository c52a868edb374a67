from globmed_edge.languages import (
    GLOBMED_LANGUAGES,
    LANGUAGES,
    guess_direction,
    is_valid_code,
    lookup,
)

REQUIRED = ["en", "zh", "ja", "ko", "fr", "es", "de", "pt", "ru", "it", "ar", "he", "hi", "bn", "id", "ms", "sw", "yo", "ha", "am", "zu", "xh", "ig", "sn", "st", "tn", "ts", "nso", "af", "bm"]


def test_table_covers_required_languages():
    missing = [c for c in REQUIRED if c not in LANGUAGES]
    assert not missing
    for code in REQUIRED:
        lang = LANGUAGES[code]
        assert lang.name and lang.native and lang.script
        assert lang.direction in ("ltr", "rtl") and lang.resource in ("high", "low")


def test_rtl_and_resource_levels():
    assert lookup("ar").is_rtl and lookup("he").is_rtl and not lookup("am").is_rtl
    assert lookup("sw").is_low_resource and lookup("zu").is_low_resource
    assert not lookup("en").is_low_resource
    assert set(GLOBMED_LANGUAGES) <= set(LANGUAGES)


def test_unknown_language_is_usable_and_low_resource():
    lang = lookup("ti-ER", "ሰላም")  # subtag stripped: Tigrinya is in the table
    assert lang.known and lang.script == "Ethi"
    unknown = lookup("dv", "ދިވެހި")  # Dhivehi (Thaana, RTL) is not in the table
    assert not unknown.known and unknown.direction == "rtl" and unknown.is_low_resource


def test_code_validation_and_direction_guess():
    assert is_valid_code("nso") and is_valid_code("pt-BR") and is_valid_code("zh-Hant")
    assert not is_valid_code("English") and not is_valid_code("") and not is_valid_code("e")
    assert guess_direction("123 שלום") == "rtl"
    assert guess_direction("  hello") == "ltr"
