"""The database fixtures give clean, working databases on both dialects."""

from sqlalchemy import create_engine, inspect, text


def test_db_url_is_empty_and_writable(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        assert inspect(engine).get_table_names() == []
        with engine.begin() as conn:
            conn.execute(text("create table t (x integer)"))
            conn.execute(text("insert into t values (1)"))
            assert conn.execute(text("select count(*) from t")).scalar() == 1
    finally:
        engine.dispose()
