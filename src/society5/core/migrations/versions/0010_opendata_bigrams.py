"""Open data: a bigram index of dataset text on SQLite, so two-character Japanese words are index lookups.

Japanese has no spaces, so package_search matches substrings. The FTS5 trigram table (0007) serves words of
three or more characters; two-character words (人口, 防災, 観光 — the commonest kind) scanned every dataset's
text with LIKE. This table holds each dataset's text as its overlapping character pairs, one token each.
PostgreSQL needs nothing: its scan of the text column is fast enough and pg_trgm serves longer words.

Revision ID: 0010
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0007"
branch_labels = None
depends_on = None


def _bigrams(text: str) -> str:
    # The same rule as society5.opendata.catalog.bigrams (migrations may not import the package's layers).
    pairs: dict[str, None] = {}
    for run in text.split():
        for i in range(len(run) - 1):
            pairs[run[i : i + 2]] = None
    return " ".join(pairs)


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    op.execute("CREATE VIRTUAL TABLE opendata_package_bigrams USING fts5(text, tokenize='ascii')")
    rows = bind.execute(sa.text("SELECT seq, search_text FROM opendata_packages")).all()
    if rows:
        bind.execute(sa.text("INSERT INTO opendata_package_bigrams(rowid, text) VALUES (:seq, :text)"),
                     [{"seq": seq, "text": _bigrams(text or "")} for seq, text in rows])


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TABLE IF EXISTS opendata_package_bigrams")
