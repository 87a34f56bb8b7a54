"""Writers, the citation check and question parsing: pure functions, no models."""

from __future__ import annotations

import random

from irtk.research.clarify import parse_assumptions, split_question
from irtk.research.evidence import gather, plan
from irtk.research.writers import Brief, check_citations, cited_sentences, extractive_report


def _evidence():
    hits = [
        [("shutil.copytree", 0.9), ("shutil.copy", 0.8), ("os.listdir", 0.5)],
        [("tempfile.mkdtemp", 0.7), ("shutil.copytree", 0.6)],
        [("shutil.rmtree", 0.75), ("os.rmdir", 0.74)],
    ]
    texts = {
        "shutil.copytree": "shutil.copytree: Recursively copy a directory tree. Return the destination directory.",
        "shutil.copy": "shutil.copy: Copy data and mode bits (\"cp src dst\"). Return the file's destination.",
        "os.listdir": "os.listdir: Return a list containing the names of the files in the directory.",
        "tempfile.mkdtemp": "tempfile.mkdtemp: User-callable function to create a unique temporary directory.",
        "shutil.rmtree": "shutil.rmtree: Recursively delete a directory tree.",
        "os.rmdir": "os.rmdir: Remove a directory.",
    }
    evidence = gather(hits, max_evidence=5)
    for e in evidence:
        e["text"] = texts[e["docid"]]
    return evidence


BRIEF = Brief("How do I copy files?", ["I want temporary folders.", "I want to delete trees."])


def test_gather_deduplicates_round_robin_and_keeps_scores():
    evidence = _evidence()
    ids = [e["docid"] for e in evidence]
    # Round-robin by rank: each sub-query's best hit before any second-best, so os.rmdir (0.74,
    # the third sub-query's second hit) is kept and os.listdir (rank 3) is cut by the cap of 5.
    assert set(ids) == {"shutil.copytree", "tempfile.mkdtemp", "shutil.rmtree", "shutil.copy", "os.rmdir"}
    assert ids == sorted(ids, key=lambda d: -next(e["score"] for e in evidence if e["docid"] == d))
    tree = next(e for e in evidence if e["docid"] == "shutil.copytree")
    assert tree["score"] == 0.9 and tree["subqueries"] == [0, 1] and tree["subquery_scores"] == [0.9, 0.6]


def test_plan_puts_short_answers_in_their_question_context():
    subqueries = plan("How do I copy files?", [("Whole trees", "What do you copy? Options: A) Whole trees; B) Files"),
                                               ("I want the report to cover temporary folders.", "Temp?"),
                                               ("I assume a short report", None)])
    assert subqueries == ["How do I copy files?", "What do you copy? Whole trees",
                          "I want the report to cover temporary folders.", "I assume a short report"]


def test_extractive_writer_is_deterministic_and_shares_the_budget():
    evidence = _evidence()
    report = extractive_report(BRIEF, evidence, sentences=5)
    shuffled = list(evidence)
    random.Random(3).shuffle(shuffled)
    assert extractive_report(BRIEF, shuffled, sentences=5) == report
    assert report.count("## ") == 3  # the overview and one section per point
    ids = [e["docid"] for e in evidence]
    text, counts = check_citations(report, ids)
    assert text == report and counts["invalid"] == 0 and counts["total"] == 5
    # Round-robin: every section got evidence before the overview got a third sentence.
    sections = report.split("## ")[1:]
    assert all("[" in s for s in sections)
    assert "[tempfile.mkdtemp]" in sections[1] and "[shutil.rmtree]" in sections[2]


def test_brackets_of_the_evidence_are_no_citations():
    evidence = [{"docid": "time.gmtime", "score": 0.5, "subqueries": [0], "subquery_scores": [0.5],
                 "text": "time.gmtime: gmtime([seconds]) -> (tm_year, tm_mon). Also log(x, [base=math.e])."}]
    report = extractive_report(Brief("time", []), evidence, sentences=2)
    cleaned, counts = check_citations(report, ["time.gmtime"])
    assert cleaned == report and counts == {"total": 2, "valid": 2, "invalid": 0, "invalid_ids": []}
    assert cited_sentences(report, ["time.gmtime"])[0] == "time.gmtime: gmtime([seconds]) -> (tm_year, tm_mon)."


def test_extractive_writer_says_when_a_point_has_no_evidence():
    report = extractive_report(Brief("q", ["a point nobody searched"]), [], sentences=3)
    assert "does not address this point" in report


def test_invented_citations_are_removed_and_counted():
    text = ("Trees copy recursively [shutil.copytree]. Files too [shutil.copy, fake.one]. "
            "Nonsense [fake.two]. Numbers [3]. Not a citation [see above]. A [link](http://x).")
    cleaned, counts = check_citations(text, ["shutil.copytree", "shutil.copy"])
    assert counts == {"total": 5, "valid": 2, "invalid": 3, "invalid_ids": ["fake.one", "fake.two", "3"]}
    assert "fake" not in cleaned and "[3]" not in cleaned
    assert "Files too [shutil.copy]." in cleaned and "Nonsense." in cleaned
    assert "[see above]" in cleaned and "[link](http://x)" in cleaned


def test_cited_sentences_skip_headings_and_uncited_prose():
    report = ("# How do I copy files?\n\n## I want to delete trees [shutil.rmtree]\n\n"
              "Intro without evidence. Trees are copied recursively. [shutil.copytree] Removal [shutil.rmtree].")
    assert cited_sentences(report, ["shutil.copytree", "shutil.rmtree"]) == [
        "Trees are copied recursively.", "Removal."]
    assert cited_sentences(report, ["other"]) == []


def test_split_question_reads_model_and_template_options():
    assert split_question("Which region? Options: A) Europe; B) Asia; C) Both") == (
        "Which region?", ["Europe", "Asia", "Both"])
    assert split_question("Which region?\nOptions: A) Europe B) Asia") == ("Which region?", ["Europe", "Asia"])
    assert split_question("Which region? Options: Europe; Asia.") == ("Which region?", ["Europe", "Asia"])
    assert split_question("Which region do you mean?") == ("Which region do you mean?", [])


def test_split_question_reads_small_model_variations():
    expected = ("Which region?", ["Europe", "Asia"])
    for text in ("Question: Which region?\nOptions: A) Europe; B) Asia; C) Europe",  # repeats dropped
                 "**Question:** Which region?\n**Options:**\n1. Europe\n2. Asia",
                 "Which region?\nOptions:\nEurope\nAsia\n",
                 "Which region? A) Europe B) Asia",
                 "Which region? (a) Europe (b) Asia",
                 "Which region?\n- Europe\n- Asia"):
        assert split_question(text) == expected, text
    # A label-less line of text is no list of options; decimals are not option numbers.
    assert split_question("- Europe") == ("- Europe", [])
    assert split_question("Python 3.12 or later? Options: A) Yes; B) No") == (
        "Python 3.12 or later?", ["Yes", "No"])


def test_parse_assumptions_drops_bullets_and_fragments():
    text = "1. I assume a beginner audience.\n- I assume standard library only.\nOK\n\nI assume a beginner audience."
    assert parse_assumptions(text, 5) == ["I assume a beginner audience.", "I assume standard library only."]
    assert parse_assumptions(text, 1) == ["I assume a beginner audience."]
