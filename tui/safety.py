"""Red-flag terms: words in a question that should trigger the emergency-signs reminder.

A deliberately small, documented list (docs/chat.md reproduces it) of danger signs from
WHO IMCI / emergency-triage teaching: chest pain, difficulty breathing, unconsciousness,
seizures, heavy bleeding, severe dehydration, stiff neck with fever, bleeding in pregnancy,
suicidal thoughts, stroke signs. Matching is case-insensitive substring matching after Unicode
NFKC normalisation (scripts without spaces, such as Chinese and Japanese, need substrings), and
every language's list is checked whatever the interface language, because staff often mix
languages. It errs towards showing the reminder: a false alarm costs one line on screen.
The terms were written by the development team and need review by clinicians who speak each
language before deployment.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

CATEGORIES = ("chest_pain", "breathing", "unconscious", "seizure", "bleeding", "dehydration",
              "stiff_neck_fever", "pregnancy_bleeding", "suicidal", "stroke")

# language -> category -> terms (lower case).
RED_FLAGS: dict[str, dict[str, tuple[str, ...]]] = {
    "en": {
        "chest_pain": ("chest pain", "pain in the chest", "crushing chest"),
        "breathing": ("difficulty breathing", "can't breathe", "cannot breathe", "short of breath",
                      "shortness of breath", "not breathing", "struggling to breathe"),
        "unconscious": ("unconscious", "unresponsive", "fainted", "passed out", "not waking"),
        "seizure": ("seizure", "convulsion", "fitting"),
        "bleeding": ("heavy bleeding", "bleeding heavily", "severe bleeding", "vomiting blood",
                     "coughing blood"),
        "dehydration": ("severe dehydration", "sunken eyes", "no urine"),
        "stiff_neck_fever": ("stiff neck",),
        "pregnancy_bleeding": ("bleeding in pregnancy", "pregnant and bleeding", "pregnancy bleeding",
                               "vaginal bleeding"),
        "suicidal": ("suicid", "kill myself", "end my life", "want to die", "self-harm"),
        "stroke": ("face drooping", "slurred speech", "sudden weakness", "stroke"),
    },
    "fr": {
        "chest_pain": ("douleur thoracique", "douleur à la poitrine", "mal à la poitrine"),
        "breathing": ("difficulté à respirer", "difficultés respiratoires", "essoufflé", "ne respire plus"),
        "unconscious": ("inconscient", "évanoui", "ne répond pas"),
        "seizure": ("convulsion", "crise d'épilepsie"),
        "bleeding": ("saignement abondant", "hémorragie", "vomit du sang"),
        "dehydration": ("déshydratation sévère", "yeux enfoncés"),
        "stiff_neck_fever": ("raideur de la nuque", "nuque raide"),
        "pregnancy_bleeding": ("saignement pendant la grossesse", "enceinte et saigne", "saignement vaginal"),
        "suicidal": ("suicid", "me tuer", "envie de mourir"),
        "stroke": ("paralysie du visage", "parole confuse", "avc"),
    },
    "es": {
        "chest_pain": ("dolor de pecho", "dolor en el pecho", "dolor torácico"),
        "breathing": ("dificultad para respirar", "no puede respirar", "falta de aire", "ahogo"),
        "unconscious": ("inconsciente", "desmayado", "desmayo", "no responde"),
        "seizure": ("convulsión", "convulsiones", "ataque epiléptico"),
        "bleeding": ("sangrado abundante", "hemorragia", "vomita sangre"),
        "dehydration": ("deshidratación grave", "deshidratación severa", "ojos hundidos"),
        "stiff_neck_fever": ("rigidez de nuca", "cuello rígido"),
        "pregnancy_bleeding": ("sangrado en el embarazo", "embarazada y sangra", "sangrado vaginal"),
        "suicidal": ("suicid", "quitarme la vida", "quiero morir"),
        "stroke": ("cara caída", "habla arrastrada", "derrame cerebral", "ictus"),
    },
    "de": {
        "chest_pain": ("brustschmerz", "schmerzen in der brust"),
        "breathing": ("atemnot", "kann nicht atmen", "schwer atmen", "atmet nicht"),
        "unconscious": ("bewusstlos", "ohnmächtig", "nicht ansprechbar"),
        "seizure": ("krampfanfall", "krämpfe", "epileptischer anfall"),
        "bleeding": ("starke blutung", "blutet stark", "blut erbrochen"),
        "dehydration": ("schwere dehydratation", "ausgetrocknet", "eingesunkene augen"),
        "stiff_neck_fever": ("nackensteifigkeit", "steifer nacken"),
        "pregnancy_bleeding": ("blutung in der schwangerschaft", "schwanger und blutet", "vaginale blutung"),
        "suicidal": ("suizid", "selbstmord", "mich umbringen", "sterben will"),
        "stroke": ("schlaganfall", "hängender mundwinkel", "verwaschene sprache"),
    },
    "pt": {
        "chest_pain": ("dor no peito", "dor torácica"),
        "breathing": ("dificuldade para respirar", "dificuldade respiratória", "falta de ar", "não consegue respirar"),
        "unconscious": ("inconsciente", "desmaiou", "desmaio", "não responde"),
        "seizure": ("convulsão", "convulsões", "crise epiléptica"),
        "bleeding": ("sangramento intenso", "hemorragia", "vomitando sangue"),
        "dehydration": ("desidratação grave", "olhos fundos"),
        "stiff_neck_fever": ("rigidez de nuca", "pescoço rígido"),
        "pregnancy_bleeding": ("sangramento na gravidez", "grávida e sangrando", "sangramento vaginal"),
        "suicidal": ("suicid", "me matar", "quero morrer"),
        "stroke": ("avc", "rosto caído", "fala arrastada"),
    },
    "it": {
        "chest_pain": ("dolore al petto", "dolore toracico"),
        "breathing": ("difficoltà a respirare", "difficoltà respiratoria", "fiato corto", "non respira"),
        "unconscious": ("incosciente", "svenuto", "svenimento", "non risponde"),
        "seizure": ("convulsion", "crisi epilettica"),
        "bleeding": ("sanguinamento abbondante", "emorragia", "vomita sangue"),
        "dehydration": ("disidratazione grave", "occhi infossati"),
        "stiff_neck_fever": ("rigidità nucale", "collo rigido"),
        "pregnancy_bleeding": ("sanguinamento in gravidanza", "incinta e sanguina", "perdite di sangue"),
        "suicidal": ("suicid", "uccidermi", "voglio morire"),
        "stroke": ("ictus", "bocca storta", "parola impastata"),
    },
    "ru": {
        "chest_pain": ("боль в груди", "боли в груди", "давящая боль"),
        "breathing": ("трудно дышать", "не может дышать", "одышка", "задыхается", "не дышит"),
        "unconscious": ("без сознания", "потерял сознание", "потеряла сознание", "обморок"),
        "seizure": ("судорог", "припадок"),
        "bleeding": ("сильное кровотечение", "кровотечение", "рвота кровью"),
        "dehydration": ("сильное обезвоживание", "запавшие глаза"),
        "stiff_neck_fever": ("ригидность затылочных", "не может наклонить голову"),
        "pregnancy_bleeding": ("кровотечение при беременности", "беременна и кровотечение"),
        "suicidal": ("суицид", "покончить с собой", "хочу умереть"),
        "stroke": ("инсульт", "перекосило лицо", "невнятная речь"),
    },
    "zh": {
        "chest_pain": ("胸痛", "胸口痛", "胸口疼"),
        "breathing": ("呼吸困难", "喘不过气", "不能呼吸"),
        "unconscious": ("昏迷", "失去意识", "晕倒", "叫不醒"),
        "seizure": ("抽搐", "惊厥", "癫痫发作"),
        "bleeding": ("大出血", "出血不止", "吐血"),
        "dehydration": ("严重脱水", "眼窝凹陷"),
        "stiff_neck_fever": ("颈项强直", "脖子僵硬"),
        "pregnancy_bleeding": ("孕期出血", "怀孕出血", "阴道出血"),
        "suicidal": ("自杀", "不想活", "想死"),
        "stroke": ("中风", "口角歪斜", "说话不清"),
    },
    "ja": {
        "chest_pain": ("胸痛", "胸の痛み", "胸が痛い"),
        "breathing": ("呼吸困難", "息ができない", "息苦しい"),
        "unconscious": ("意識がない", "意識不明", "気を失", "反応がない"),
        "seizure": ("けいれん", "痙攣", "ひきつけ"),
        "bleeding": ("大量出血", "出血が止まらない", "吐血"),
        "dehydration": ("重度の脱水", "ひどい脱水"),
        "stiff_neck_fever": ("項部硬直", "首が硬い"),
        "pregnancy_bleeding": ("妊娠中の出血", "性器出血"),
        "suicidal": ("自殺", "死にたい"),
        "stroke": ("脳卒中", "ろれつが回らない", "顔の片側が下が"),
    },
    "ko": {
        "chest_pain": ("흉통", "가슴 통증", "가슴이 아파"),
        "breathing": ("호흡 곤란", "호흡곤란", "숨을 못", "숨쉬기 힘"),
        "unconscious": ("의식이 없", "의식 불명", "기절", "실신"),
        "seizure": ("경련", "발작"),
        "bleeding": ("대량 출혈", "심한 출혈", "피를 토"),
        "dehydration": ("심한 탈수", "중증 탈수"),
        "stiff_neck_fever": ("목 경직", "목이 뻣뻣"),
        "pregnancy_bleeding": ("임신 중 출혈", "질 출혈"),
        "suicidal": ("자살", "죽고 싶"),
        "stroke": ("뇌졸중", "말이 어눌", "얼굴이 처지"),
    },
    "ar": {
        "chest_pain": ("ألم في الصدر", "ألم الصدر", "ألم صدري"),
        "breathing": ("صعوبة في التنفس", "ضيق في التنفس", "ضيق التنفس", "لا يستطيع التنفس"),
        "unconscious": ("فاقد الوعي", "فقدان الوعي", "إغماء", "مغمى عليه"),
        "seizure": ("تشنج", "نوبة صرع"),
        "bleeding": ("نزيف حاد", "نزيف شديد", "يتقيأ دم"),
        "dehydration": ("جفاف شديد", "عيون غائرة"),
        "stiff_neck_fever": ("تيبس الرقبة", "تصلب الرقبة"),
        "pregnancy_bleeding": ("نزيف أثناء الحمل", "نزيف في الحمل", "نزيف مهبلي"),
        "suicidal": ("انتحار", "أريد أن أموت", "أقتل نفسي"),
        "stroke": ("سكتة دماغية", "جلطة دماغية", "تلعثم في الكلام"),
    },
    "hi": {
        "chest_pain": ("सीने में दर्द", "छाती में दर्द"),
        "breathing": ("साँस लेने में तकलीफ़", "सांस लेने में तकलीफ", "साँस फूल", "सांस फूल", "साँस नहीं"),
        "unconscious": ("बेहोश", "होश नहीं"),
        "seizure": ("दौरा", "दौरे", "ऐंठन", "मिर्गी"),
        "bleeding": ("बहुत ख़ून", "बहुत खून", "भारी रक्तस्राव", "खून की उल्टी"),
        "dehydration": ("गंभीर निर्जलीकरण", "धँसी आँखें", "पानी की भारी कमी"),
        "stiff_neck_fever": ("गर्दन में अकड़न", "गर्दन अकड़"),
        "pregnancy_bleeding": ("गर्भावस्था में रक्तस्राव", "गर्भावस्था में ख़ून", "गर्भावस्था में खून"),
        "suicidal": ("आत्महत्या", "मरना चाहता", "मरना चाहती"),
        "stroke": ("लकवा", "स्ट्रोक", "बोलने में लड़खड़ाहट"),
    },
    "sw": {
        "chest_pain": ("maumivu ya kifua", "maumivu kifuani"),
        "breathing": ("shida ya kupumua", "kupumua kwa shida", "hawezi kupumua", "anashindwa kupumua"),
        "unconscious": ("amepoteza fahamu", "kupoteza fahamu", "hana fahamu", "amezirai"),
        "seizure": ("degedege", "kifafa", "mtukutiko"),
        "bleeding": ("kutokwa damu nyingi", "anavuja damu nyingi", "kutapika damu"),
        "dehydration": ("upungufu mkubwa wa maji", "macho yamezama"),
        "stiff_neck_fever": ("shingo ngumu", "kukakamaa kwa shingo"),
        "pregnancy_bleeding": ("kutokwa damu wakati wa ujauzito", "mjamzito anatokwa damu"),
        "suicidal": ("kujiua", "kujitoa uhai", "anataka kufa"),
        "stroke": ("kiharusi", "uso umelegea", "kushindwa kuongea"),
    },
    "yo": {
        "chest_pain": ("ìrora àyà", "irora aya", "àyà ń dùn", "aya n dun"),
        "breathing": ("ìṣòro mímí", "isoro mimi", "kò lè mí", "ko le mi"),
        "unconscious": ("dákú", "daku", "kò mọ nǹkan", "ko mo nkan"),
        "seizure": ("gìrì", "giri", "wárápá", "warapa"),
        "bleeding": ("ẹ̀jẹ̀ púpọ̀", "eje pupo"),
        "dehydration": ("gbígbẹ omi", "gbigbe omi", "ojú wọlé", "oju wole"),
        "stiff_neck_fever": ("ọrùn líle", "orun lile"),
        "pregnancy_bleeding": ("ẹ̀jẹ̀ nígbà oyún", "eje nigba oyun"),
        "suicidal": ("pa ara mi", "pa ara rẹ̀", "fẹ́ kú", "fe ku"),
        "stroke": ("àrùn ọpọlọ", "arun opolo", "rọpárọsẹ̀", "roparose"),
    },
    "ha": {
        "chest_pain": ("ciwon ƙirji", "ciwon kirji", "zafin ƙirji"),
        "breathing": ("wahalar numfashi", "ba ya iya numfashi", "ba ta iya numfashi", "numfashi da ƙyar"),
        "unconscious": ("ya suma", "ta suma", "ba ya cikin hayyacinsa"),
        "seizure": ("farfaɗiya", "farfadiya", "jijjiga"),
        "bleeding": ("zubar jini mai yawa", "jini mai yawa", "amai da jini"),
        "dehydration": ("rashin ruwa mai tsanani", "idanu sun lotsa"),
        "stiff_neck_fever": ("taurin wuya", "wuya ya kafe"),
        "pregnancy_bleeding": ("zubar jini lokacin ciki", "mai ciki tana zubar jini"),
        "suicidal": ("kashe kaina", "kashe kansa", "kashe kanta", "ina so in mutu"),
        "stroke": ("shanyewar ɓarin jiki", "shanyewar barin jiki", "bugun jini"),
    },
    "am": {
        "chest_pain": ("የደረት ሕመም", "የደረት ህመም", "ደረቴን ያመኛል"),
        "breathing": ("የመተንፈስ ችግር", "መተንፈስ አልቻለም", "መተንፈስ አቃተው", "ትንፋሽ ማጠር"),
        "unconscious": ("ራሱን ስቷል", "ራሷን ስታለች", "ራስን መሳት", "ንቃተ ህሊና"),
        "seizure": ("የሚጥል", "መንቀጥቀጥ", "ቁርጥማት"),
        "bleeding": ("ከፍተኛ ደም መፍሰስ", "ብዙ ደም", "ደም ማስመለስ"),
        "dehydration": ("ከባድ የሰውነት ድርቀት", "የሰውነት ድርቀት"),
        "stiff_neck_fever": ("የአንገት መገተር", "አንገት ማንቀሳቀስ አልቻለም"),
        "pregnancy_bleeding": ("በእርግዝና ጊዜ ደም", "እርጉዝ ደም"),
        "suicidal": ("ራስን ማጥፋት", "ራሴን ማጥፋት", "መሞት እፈልጋለሁ"),
        "stroke": ("ስትሮክ", "የአንጎል ደም መፍሰስ", "ፊቱ ተጣመመ"),
    },
    "zu": {
        "chest_pain": ("ubuhlungu besifuba", "isifuba sibuhlungu"),
        "breathing": ("ukuphefumula kanzima", "akakwazi ukuphefumula", "uphefumula kanzima"),
        "unconscious": ("uqulekile", "ukuquleka", "akazi lutho"),
        "seizure": ("isithuthwane", "ukudlikiza", "uyadlikiza"),
        "bleeding": ("ukopha kakhulu", "uyopha kakhulu", "uhlanza igazi"),
        "dehydration": ("ukuphelelwa amanzi emzimbeni", "amehlo ashonile"),
        "stiff_neck_fever": ("intamo eqinile", "ukuqina kwentamo"),
        "pregnancy_bleeding": ("ukopha ekhulelwe", "ukopha ngesikhathi sokukhulelwa"),
        "suicidal": ("ukuzibulala", "ngifuna ukufa", "ngizibulale"),
        "stroke": ("unhlangothi", "isifo sohlangothi", "ubuso buhudulekile"),
    },
}


@dataclass(frozen=True)
class RedFlag:
    lang: str
    category: str
    term: str


def normalize(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


def find_red_flags(text: str) -> list[RedFlag]:
    """Every red-flag term found in `text` (all languages), one per category, in category order."""
    norm = normalize(text)
    found: dict[str, RedFlag] = {}
    for lang, table in RED_FLAGS.items():
        for category, terms in table.items():
            if category in found:
                continue
            for term in terms:
                if normalize(term) in norm:
                    found[category] = RedFlag(lang, category, term)
                    break
    return [found[c] for c in CATEGORIES if c in found]


def emergency_reminder(text: str, lang: str) -> str | None:
    """The localized emergency-signs reminder for `text`, or None when it has no red flags."""
    flags = find_red_flags(text)
    if not flags:
        return None
    from globmed_edge.tui.i18n import Translator

    return Translator(lang)("emergency", terms=", ".join(f.term for f in flags))
