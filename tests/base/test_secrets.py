from dmlkit.base.secrets import mask_secrets


def test_passwords_of_urls_are_masked():
    assert mask_secrets("postgresql+psycopg://dmlkit:SECRETPW@127.0.0.1:55432/dmlkit") == (
        "postgresql+psycopg://dmlkit:***@127.0.0.1:55432/dmlkit")
    assert mask_secrets("a mysql://u:p@ss:w@rd@h/db b@c") == "a mysql://u:***@h/db b@c"
    assert mask_secrets('{"storage":"postgresql://u:pw@h/d","mail":"a@b"}') == (
        '{"storage":"postgresql://u:***@h/d","mail":"a@b"}')
    for plain in ("sqlite:///runs/optuna.db", "postgresql://u@h/d", "http://h:80/x"):
        assert mask_secrets(plain) == plain
