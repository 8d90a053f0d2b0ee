"""Vocabularies behind the PhraseCut analysis subsets.

These are data facts of the PhraseCut benchmark definition (the word lists its subset analysis uses:
stuff category names, attribute families, the 80 COCO category names). They are needed verbatim to
reproduce the per-subset numbers; entries are '|'-separated to keep the file compact.
"""


def _words(text: str) -> frozenset:
    return frozenset(w.strip() for w in text.split("|") if w.strip())


# Category names counted as "stuff" (t_stuff); matched as substrings of the phrase's category name.
STUFF_NAMES = tuple(
    w.strip()
    for w in (
        "water|waterdrops|sea|river|fog|ground|field|platform|rail|pavement|road|gravel|mud|dirt|snow|sand|"
        "solid|hill|mountain|stone|rock|wood|sky|cloud|vegetation|straw|moss|branch|leaf|leaves|bush|tree|"
        "grass|forest|railing|net|cage|fence|building|roof|tent|bridge|skyscraper|house|food|vegetable|salad|"
        "textile|banner|blanket|curtain|cloth|napkin|towel|mat|rug|stairs|light|counter|mirror|cupboard|"
        "cabinet|shelf|table|desk|door|window|floor|carpet|ceiling|wall|brick|metal|plastic|paper|cardboard|"
        "street|shadow|sidewalk|plant|wave|reflection|ocean|beach"
    ).split("|")
)

ATTRIBUTE_FAMILIES = {
    "a_color": _words(
        "white|black|blue|green|brown|red|yellow|gray|grey|silver|orange|dark|pink|tan|purple|beige|bright|"
        "gold|colorful|blonde|light brown|light blue|colored|multicolored|maroon|dark blue|dark brown|golden|"
        "dark green|black and white|blond|evergreen|light colored|dark grey|multi-colored|light skinned|"
        "dark colored|multi colored|blue and white|light green|bright blue|red and white|dark gray|"
        "cream colored|light grey|teal|navy blue|turquoise|murky|navy"
    ),
    "a_shape": _words(
        "large|small|tall|long|big|short|round|grassy|little|thick|square|thin|sliced|curved|rectangular|flat|"
        "high|wide|stacked|arched|chain link|circular|bent|cut|huge|metallic|cream|pointy|extended|curly|"
        "skinny|pointed|narrow|piled|tiny|vertical|oval|curled|row|straight|smaller|triangular|horizontal|"
        "crossed|sharp|upside down|pointing|chopped|slice|rectangle|shallow|wispy|rounded|piece|scattered|"
        "giant|slanted|tied|sparse|circle|patchy|tilted|fat|upright|larger"
    ),
    "a_material": _words(
        "wooden|metal|wood|brick|cloudy|glass|concrete|plastic|stone|tiled|cement|dirt|sandy|leafy|fluffy|"
        "rocky|snowy|leather|steel|paper|chocolate|tile|ceramic|grass|furry|iron|water|stainless steel|"
        "hardwood|marble|khaki|cardboard|porcelain|snow covered|asphalt|chrome|rock|wicker|rubber|denim|muddy|"
        "foamy|granite|bricked|gravel|snow-covered|clay|sand|red brick"
    ),
    "a_texture": _words(
        "clear|wet|striped|dirty|paved|shiny|painted|dry|plaid|clean|blurry|hazy|floral|rusty|splashing|"
        "cloudless|worn|smooth|checkered|spotted|patterned|reflecting|wrinkled|reflective|shining|choppy|rough|"
        "reflected|rusted|lined|fuzzy|blurred|faded|printed|foggy|dusty|glazed|rippled|transparent|frosted"
    ),
    "a_state": _words(
        "standing|open|sitting|walking|parked|hanging|playing|closed|empty|on|looking|watching|flying|eating|"
        "skiing|covered|surfing|skateboarding|full|jumping|holding|close|leaning|running|riding|folded|waiting|"
        "moving|laying|grazing|off|talking|parking|calm|posing|crashing|melted|skating|seated|raised|"
        "playing tennis|sleeping|opened|broken|resting|dried|snowboarding|crouching|driving|fried|swinging|"
        "cracked|drinking|burnt|kneeling|stopped|rolling|sitting down|trimmed|breaking|crouched|bending|"
        "dressed|standing up|wrapped|attached|floating|rolled up|lying|squatting|held|cutting|outstretched|"
        "illuminated|reading|turned|swimming|turning"
    ),
    "a_adj": _words(
        "young|old|smiling|bare|light|part|dead|cooked|framed|pictured|overcast|leafless|beautiful|stuffed|"
        "growing|decorative|electrical|electric|bald|older|lit|fresh|lush|wire|happy|puffy|sunny|ripe|male|"
        "palm|shirtless|female|asian|hairy|ornate|bushy|deep|wavy|toasted|barefoot|potted|short sleeved|edge|"
        "wild|busy|decorated|double decker|long sleeved|partial|soft|flat screen|healthy|floppy|plain|filled|"
        "modern|long sleeve|overgrown|displayed|digital|cast|airborne|delicious|hard|carpeted|heavy|new|"
        "grilled|sleeveless|pale|pretty|different|american|nice|fake|designed|cute|manicured|written"
    ),
    "a_noun": _words(
        "tennis|baseball|man's|baby|train|woman's|pine|tree|street|passenger|traffic|computer|adult|ski|man|"
        "wine|burgundy|stop|snow|bathroom|city|teddy|kitchen|patch|nike|woman|wall|fire|clock|window|straw|"
        "flower|ground|pizza|apple|power|coffee|tennis player|toy|ocean"
    ),
    "a_loc": _words(
        "distant|background|back|behind|in background|side|up|rear|down|top|far|overhead|low|above|outdoors|"
        "in distance|in the background|inside|outdoor|bottom|in air"
    ),
    "a_count": _words("one|three|four|many|pair|several|double|grouped|group|together|bunch|alone|set|single"),
    "a_bad": _words("here|present|wearing|in the picture|some|daytime|existing|ready|made|in picture"),
}

COCO_NAMES = _words(
    "person|bicycle|car|motorcycle|airplane|bus|train|truck|boat|traffic light|fire hydrant|stop sign|"
    "parking meter|bench|bird|cat|dog|horse|sheep|cow|elephant|bear|zebra|giraffe|backpack|umbrella|handbag|"
    "tie|suitcase|frisbee|skis|snowboard|sports ball|kite|baseball bat|baseball glove|skateboard|surfboard|"
    "tennis racket|bottle|wine glass|cup|fork|knife|spoon|bowl|banana|apple|sandwich|orange|broccoli|carrot|"
    "hot dog|pizza|donut|cake|chair|couch|potted plant|bed|dining table|toilet|tv|laptop|mouse|remote|"
    "keyboard|cell phone|microwave|oven|toaster|sink|refrigerator|book|clock|vase|scissors|teddy bear|"
    "hair drier|toothbrush"
)

# Subset names in the order the PhraseCut analysis reports them.
SUBSET_NAMES = (
    "all c_coco c20 c100 c500 c21-100 c101-500 c500+ i_single i_multi i_many p_name p_att p_att+ p_rel p_rel+ "
    "p_verbose p_attm p_relm t_stuff t_obj s_small s_mid s_large a20 a100 a200 a21-100 a101-200 a200+ a_color "
    "a_shape a_material a_texture a_state a_adj a_noun a_loc a_count a_bad p_att_rel d_cocotv d_notcocotv"
).split()
