"""Open data: a bigram index of dataset text, so two-character Japanese words are index lookups.

Japanese has no spaces, so package_search matches substrings. Trigram indexes (FTS5 on SQLite, pg_trgm on
PostgreSQL, 0007) serve words of three or more characters; two-character words (人口, 防災, 観光 — the
commonest kind) scanned every dataset's text with LIKE. The index holds each dataset's text as its
overlapping character pairs: an FTS5 table of pair tokens on SQLite, a ``tsvector`` of the pairs (built with
``array_to_tsvector``: no parser, no normalization) with a GIN index on PostgreSQL. (A ``text[]`` column was
tried first: after ANALYZE the planner evaluated ``@>`` row by row, ten times slower than the index.)

Revision ID: 0010
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0007"
branch_labels = None
depends_on = None


def _bigrams(text: str) -> list[str]:
    # The same rule as society5.opendata.catalog.bigram_list (migrations may not import the package's layers).
    pairs: dict[str, None] = {}
    for run in text.split():
        for i in range(len(run) - 1):
            pairs[run[i : i + 2]] = None
    return list(pairs)


def upgrade() -> None:
    bind = op.get_bind()
    rows = bind.execute(sa.text("SELECT seq, search_text FROM opendata_packages")).all()
    if bind.dialect.name == "sqlite":
        op.execute("CREATE VIRTUAL TABLE opendata_package_bigrams USING fts5(text, tokenize='ascii')")
        if rows:
            bind.execute(sa.text("INSERT INTO opendata_package_bigrams(rowid, text) VALUES (:seq, :text)"),
                         [{"seq": seq, "text": " ".join(_bigrams(text or ""))} for seq, text in rows])
    elif bind.dialect.name == "postgresql":
        op.execute("ALTER TABLE opendata_packages ADD COLUMN search_bigrams tsvector")
        if rows:
            bind.execute(sa.text("UPDATE opendata_packages SET search_bigrams = "
                                 "array_to_tsvector(CAST(:pairs AS text[])) WHERE seq = :seq"),
                         [{"seq": seq, "pairs": _bigrams(text or "")} for seq, text in rows])
        op.execute("CREATE INDEX ix_opendata_packages_bigrams ON opendata_packages "
                   "USING gin (search_bigrams)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TABLE IF EXISTS opendata_package_bigrams")
    elif op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE opendata_packages DROP COLUMN IF EXISTS search_bigrams")
