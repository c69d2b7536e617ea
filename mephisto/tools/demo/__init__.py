"""The demo task `mephisto demo` runs: a sentence-sentiment form and its data."""

from pathlib import Path

DEMO_DIR = Path(__file__).parent
DEMO_HTML = DEMO_DIR / "demo_task.html"

SENTENCES = [
    "The new library opened its doors to the whole town this morning.",
    "The train was two hours late and nobody told us why.",
    "The soup was warm.",
    "Our team finally shipped the feature everyone asked for.",
    "The printer jammed again during the important meeting.",
    "It rained for most of the afternoon.",
    "She found her lost cat sleeping on the neighbour's porch.",
    "The parcel arrived damaged and half empty.",
]


def demo_data(units: int) -> list[dict[str, str]]:
    return [{"text": SENTENCES[i % len(SENTENCES)], "item": str(i)} for i in range(units)]
