"""Reading the environment into Config: parsing, defaults, and the refusals that stop startup."""

from __future__ import annotations

from pathlib import Path

import pytest

from authserver.config import DEV_KEY_ENCRYPTION_KEY, DEV_SECRET_KEY, Config, ConfigError

PRODUCTION_ENV = {
    "AUTHSERVER_ENV": "production",
    "AUTHSERVER_SECRET_KEY": "prod-secret-key-0123456789abcdefghijklmnop",
    "AUTHSERVER_KEY_ENCRYPTION_KEY": "prod-key-encryption-key-0123456789abcdefgh",
    "AUTHSERVER_ISSUER": "https://auth.example.com",
    "DATABASE_URL": "postgresql+psycopg://authserver@db.example.com/authserver",
}


def _problems(environ: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        Config.from_env(environ)
    return caught.value.problems


def _production(**changes: str | None) -> dict[str, str]:
    """PRODUCTION_ENV with some variables replaced, or removed when given None."""
    environ = dict(PRODUCTION_ENV)
    for name, value in changes.items():
        if value is None:
            environ.pop(name, None)
        else:
            environ[name] = value
    return environ


# -- parsing ---------------------------------------------------------------------------------


def test_integer_settings_are_parsed_from_their_variables() -> None:
    config = Config.from_env(
        {
            "AUTHSERVER_ACCESS_TOKEN_TTL": "300",
            "AUTHSERVER_REFRESH_REUSE_GRACE": " 0 ",
            "AUTHSERVER_ARGON2_TIME_COST": "3",
        }
    )

    assert config.access_token_ttl == 300
    assert config.refresh_reuse_grace == 0
    assert config.argon2_time_cost == 3


def test_string_settings_are_read_and_trimmed() -> None:
    config = Config.from_env(
        {"AUTHSERVER_ISSUER": " https://auth.example.com ", "AUTHSERVER_SIGNING_ALG": "RS256"}
    )

    assert config.issuer == "https://auth.example.com"
    assert config.signing_alg == "RS256"


def test_unset_and_empty_variables_keep_the_defaults() -> None:
    config = Config.from_env({"AUTHSERVER_ACCESS_TOKEN_TTL": ""})
    defaults = Config()

    assert config.env == "development"
    assert config.access_token_ttl == defaults.access_token_ttl == 600
    assert config.refresh_idle_ttl == 14 * 24 * 3600
    assert config.refresh_absolute_ttl == 30 * 24 * 3600
    assert config.argon2_memory_cost_kib == 19456
    assert config.secret_key == DEV_SECRET_KEY


def test_database_url_defaults_to_sqlite_under_the_instance_dir(tmp_path: Path) -> None:
    instance = tmp_path / "instance"

    config = Config.from_env({"AUTHSERVER_INSTANCE_DIR": str(instance)})

    assert config.database_url == f"sqlite:///{instance.resolve() / 'authserver.db'}"
    assert config.is_sqlite


def test_database_url_without_instance_dir_is_under_the_relative_instance_folder() -> None:
    config = Config.from_env({})

    assert config.database_url == f"sqlite:///{Path('instance').resolve() / 'authserver.db'}"


def test_database_url_is_taken_from_database_url_variable() -> None:
    url = "postgresql+psycopg://authserver@db.example.com/authserver"

    config = Config.from_env({"DATABASE_URL": url})

    assert config.database_url == url
    assert not config.is_sqlite


def test_a_non_integer_value_is_reported_with_its_variable_name() -> None:
    problems = _problems({"AUTHSERVER_ACCESS_TOKEN_TTL": "ten minutes"})

    assert problems == ["AUTHSERVER_ACCESS_TOKEN_TTL must be a whole number, got 'ten minutes'"]


def test_every_bad_integer_is_reported_not_just_the_first() -> None:
    problems = _problems({"AUTHSERVER_ACCESS_TOKEN_TTL": "1.5", "AUTHSERVER_JWKS_MAX_AGE": "lots"})

    assert problems == [
        "AUTHSERVER_ACCESS_TOKEN_TTL must be a whole number, got '1.5'",
        "AUTHSERVER_JWKS_MAX_AGE must be a whole number, got 'lots'",
    ]


# -- refusals in any environment --------------------------------------------------------------


def test_argon2_memory_below_owasp_minimum_is_refused() -> None:
    problems = _problems({"AUTHSERVER_ARGON2_MEMORY_COST_KIB": "19455"})

    assert problems == ["AUTHSERVER_ARGON2_MEMORY_COST_KIB must be at least 19456 (OWASP minimum)"]


def test_argon2_memory_at_owasp_minimum_is_accepted() -> None:
    config = Config.from_env({"AUTHSERVER_ARGON2_MEMORY_COST_KIB": "19456"})

    assert config.argon2_memory_cost_kib == 19456


def test_a_negative_client_cache_time_is_refused_and_zero_turns_it_off() -> None:
    problems = _problems({"AUTHSERVER_CLIENT_CACHE_SECONDS": "-1"})
    off = Config.from_env({"AUTHSERVER_CLIENT_CACHE_SECONDS": "0"})

    assert problems == ["AUTHSERVER_CLIENT_CACHE_SECONDS must be 0 (off) or positive"]
    assert off.client_cache_seconds == 0


def test_password_min_score_defaults_to_3_and_is_read_from_its_variable() -> None:
    assert Config.from_env({}).password_min_score == 3
    assert Config.from_env({"AUTHSERVER_PASSWORD_MIN_SCORE": "4"}).password_min_score == 4
    assert Config.from_env({"AUTHSERVER_PASSWORD_MIN_SCORE": "0"}).password_min_score == 0


@pytest.mark.parametrize("value", ["-1", "5"])
def test_a_password_min_score_outside_0_to_4_is_refused(value: str) -> None:
    problems = _problems({"AUTHSERVER_PASSWORD_MIN_SCORE": value})

    assert problems == ["AUTHSERVER_PASSWORD_MIN_SCORE must be 0 (off) to 4"]


@pytest.mark.parametrize("prefix", ["has space", "a/b", "x" * 65, "é"])
def test_a_rate_limit_key_prefix_that_would_need_quoting_is_refused(prefix: str) -> None:
    assert _problems({"AUTHSERVER_RATELIMIT_KEY_PREFIX": prefix}) == [
        "AUTHSERVER_RATELIMIT_KEY_PREFIX must be at most 64 letters, digits, '-', '_', '.' or ':'"
    ]


def test_a_rate_limit_key_prefix_is_read_and_empty_means_none() -> None:
    prefixed = Config.from_env({"AUTHSERVER_RATELIMIT_KEY_PREFIX": "eu-1.auth:prod_2"})

    assert prefixed.ratelimit_key_prefix == "eu-1.auth:prod_2"
    assert Config.from_env({}).ratelimit_key_prefix == ""


def test_the_outbox_settings_default_to_an_in_process_sender_a_minute_and_a_day() -> None:
    config = Config.from_env({})

    assert config.outbox_in_process == 1
    assert config.outbox_retry_max_seconds == 60
    assert config.outbox_give_up_seconds == 86400
    assert (
        Config.from_env(
            {
                "AUTHSERVER_OUTBOX_IN_PROCESS": "0",
                "AUTHSERVER_OUTBOX_RETRY_MAX_SECONDS": "5",
                "AUTHSERVER_OUTBOX_GIVE_UP_SECONDS": "5",
            }
        ).outbox_in_process
        == 0
    )


@pytest.mark.parametrize(
    ("environ", "problem"),
    [
        ({"AUTHSERVER_OUTBOX_IN_PROCESS": "2"}, "AUTHSERVER_OUTBOX_IN_PROCESS must be 0 or 1"),
        (
            {"AUTHSERVER_NEW_DEVICE_NOTICES": "yes"},
            "AUTHSERVER_NEW_DEVICE_NOTICES must be a whole number, got 'yes'",
        ),
        ({"AUTHSERVER_NEW_DEVICE_NOTICES": "2"}, "AUTHSERVER_NEW_DEVICE_NOTICES must be 0 or 1"),
        (
            {"AUTHSERVER_REQUIRE_SECOND_FACTOR": "2"},
            "AUTHSERVER_REQUIRE_SECOND_FACTOR must be 0 or 1",
        ),
        (
            {"AUTHSERVER_TRUSTED_DEVICE_SKIPS_SECOND_FACTOR": "yes"},
            "AUTHSERVER_TRUSTED_DEVICE_SKIPS_SECOND_FACTOR must be a whole number, got 'yes'",
        ),
        (
            {"AUTHSERVER_OUTBOX_RETRY_MAX_SECONDS": "0"},
            "AUTHSERVER_OUTBOX_RETRY_MAX_SECONDS must be at least 1",
        ),
        (
            {
                "AUTHSERVER_OUTBOX_RETRY_MAX_SECONDS": "120",
                "AUTHSERVER_OUTBOX_GIVE_UP_SECONDS": "60",
            },
            "AUTHSERVER_OUTBOX_GIVE_UP_SECONDS must be at least "
            "AUTHSERVER_OUTBOX_RETRY_MAX_SECONDS",
        ),
    ],
)
def test_outbox_settings_that_make_no_sense_are_refused(
    environ: dict[str, str], problem: str
) -> None:
    assert _problems(environ) == [problem]


def test_idle_ttl_longer_than_absolute_ttl_is_refused() -> None:
    problems = _problems(
        {"AUTHSERVER_REFRESH_IDLE_TTL": "3601", "AUTHSERVER_REFRESH_ABSOLUTE_TTL": "3600"}
    )

    assert problems == [
        "AUTHSERVER_REFRESH_IDLE_TTL must not exceed AUTHSERVER_REFRESH_ABSOLUTE_TTL"
    ]


def test_unknown_environment_name_is_refused() -> None:
    problems = _problems({"AUTHSERVER_ENV": "staging"})

    assert problems == ["AUTHSERVER_ENV must be 'development' or 'production', got 'staging'"]


def test_issuer_with_trailing_slash_is_refused() -> None:
    problems = _problems({"AUTHSERVER_ISSUER": "https://auth.example.com/"})

    assert problems == ["AUTHSERVER_ISSUER must have no query, fragment or trailing slash"]


def test_unknown_log_level_is_refused() -> None:
    problems = _problems({"AUTHSERVER_LOG_LEVEL": "verbose"})

    assert any(problem.startswith("AUTHSERVER_LOG_LEVEL") for problem in problems)


# -- production ------------------------------------------------------------------------------


def test_a_fully_configured_production_environment_passes() -> None:
    config = Config.from_env(PRODUCTION_ENV)

    assert config.is_production
    assert config.secret_key == PRODUCTION_ENV["AUTHSERVER_SECRET_KEY"]
    assert config.issuer == "https://auth.example.com"


def test_production_refuses_a_missing_secret_key() -> None:
    problems = _problems(_production(AUTHSERVER_SECRET_KEY=None))

    assert problems == ["AUTHSERVER_SECRET_KEY is missing or the development default; set a secret"]


def test_production_refuses_the_development_secret_key() -> None:
    problems = _problems(_production(AUTHSERVER_SECRET_KEY=DEV_SECRET_KEY))

    assert problems == ["AUTHSERVER_SECRET_KEY is missing or the development default; set a secret"]


def test_production_refuses_a_short_secret_key() -> None:
    problems = _problems(_production(AUTHSERVER_SECRET_KEY="x" * 31))

    assert problems == ["AUTHSERVER_SECRET_KEY must be at least 32 characters"]


def test_production_refuses_a_short_metrics_token() -> None:
    problems = _problems(_production(AUTHSERVER_METRICS_TOKEN="m" * 31))

    assert problems == ["AUTHSERVER_METRICS_TOKEN must be at least 32 characters"]


def test_production_accepts_a_long_metrics_token_and_no_token_at_all() -> None:
    assert Config.from_env(_production(AUTHSERVER_METRICS_TOKEN="m" * 32)).metrics_token
    assert Config.from_env(_production(AUTHSERVER_METRICS_TOKEN=None)).metrics_token == ""


@pytest.mark.parametrize("path", ["/account"])
def test_the_default_audience_may_not_be_an_audience_of_authservers_own_apis(path: str) -> None:
    issuer = PRODUCTION_ENV["AUTHSERVER_ISSUER"]

    problems = _problems(_production(AUTHSERVER_DEFAULT_AUDIENCE=issuer + path))

    assert len(problems) == 1
    assert problems[0].startswith("AUTHSERVER_DEFAULT_AUDIENCE must not be an audience")


def test_a_rate_limit_that_does_not_parse_is_refused() -> None:
    problems = _problems({"AUTHSERVER_RATELIMIT_PER_BROWSER_SESSION": "lots"})

    assert problems == [
        "AUTHSERVER_RATELIMIT_PER_BROWSER_SESSION must be a rate like 600/minute, got 'lots'"
    ]


def test_the_family_budget_is_one_rate_while_flask_limiters_take_several() -> None:
    several = "10/second;600/minute"

    problems = _problems(
        {"AUTHSERVER_RATELIMIT_PER_FAMILY": several, "AUTHSERVER_RATELIMIT_TOKEN": several}
    )

    assert len(problems) == 1
    assert problems[0].startswith("AUTHSERVER_RATELIMIT_PER_FAMILY must be a rate")


def test_production_refuses_a_missing_key_encryption_key() -> None:
    problems = _problems(_production(AUTHSERVER_KEY_ENCRYPTION_KEY=None))

    assert problems == [
        "AUTHSERVER_KEY_ENCRYPTION_KEY is missing or the development default; set a secret"
    ]


def test_production_refuses_the_development_key_encryption_key() -> None:
    problems = _problems(_production(AUTHSERVER_KEY_ENCRYPTION_KEY=DEV_KEY_ENCRYPTION_KEY))

    assert problems == [
        "AUTHSERVER_KEY_ENCRYPTION_KEY is missing or the development default; set a secret"
    ]


def test_production_refuses_an_http_issuer() -> None:
    problems = _problems(_production(AUTHSERVER_ISSUER="http://auth.example.com"))

    assert problems == ["AUTHSERVER_ISSUER must be an https URL in production"]


def test_production_refuses_an_sqlite_database() -> None:
    problems = _problems(_production(DATABASE_URL="sqlite:////var/lib/authserver/auth.db"))

    assert problems == ["DATABASE_URL must name PostgreSQL in production, not SQLite"]


def test_production_refuses_the_default_sqlite_database() -> None:
    problems = _problems(_production(DATABASE_URL=None))

    assert problems == ["DATABASE_URL must name PostgreSQL in production, not SQLite"]


def test_production_reports_every_problem_together_one_line_each() -> None:
    with pytest.raises(ConfigError) as caught:
        Config.from_env(
            {"AUTHSERVER_ENV": "production", "AUTHSERVER_ISSUER": "http://auth.example.com"}
        )

    expected = [
        "AUTHSERVER_SECRET_KEY is missing or the development default; set a secret",
        "AUTHSERVER_KEY_ENCRYPTION_KEY is missing or the development default; set a secret",
        "AUTHSERVER_ISSUER must be an https URL in production",
        "DATABASE_URL must name PostgreSQL in production, not SQLite",
    ]
    assert caught.value.problems == expected
    assert str(caught.value).splitlines() == expected


def test_development_accepts_the_defaults_production_refuses() -> None:
    config = Config.from_env({"AUTHSERVER_ISSUER": "http://127.0.0.1:8000"})

    assert not config.is_production
    assert config.secret_key == DEV_SECRET_KEY
    assert config.key_encryption_key == DEV_KEY_ENCRYPTION_KEY
    assert config.is_sqlite


def test_signup_is_off_unless_set_and_an_unknown_mode_stops_the_start() -> None:
    assert Config().signup == "off"
    assert Config.from_env({"AUTHSERVER_SIGNUP": " invite "}).signup == "invite"

    assert _problems({"AUTHSERVER_SIGNUP": "yes"}) == [
        "AUTHSERVER_SIGNUP must be one of off, open, invite, got 'yes'"
    ]
    assert _problems({"AUTHSERVER_SIGNUP_LINK_TTL": "0", "AUTHSERVER_INVITATION_TTL": "-1"}) == [
        "AUTHSERVER_SIGNUP_LINK_TTL must be positive",
        "AUTHSERVER_INVITATION_TTL must be positive",
    ]


@pytest.mark.parametrize(
    "given",
    [
        "postgres://ann:pw@db.example.com:5432/auth",
        "postgresql://ann:pw@db.example.com:5432/auth",
        " postgresql+psycopg://ann:pw@db.example.com:5432/auth ",
    ],
)
def test_a_postgres_url_without_the_driver_means_psycopg(given: str) -> None:
    config = Config.from_env({"DATABASE_URL": given})

    assert config.database_url == "postgresql+psycopg://ann:pw@db.example.com:5432/auth"


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ("mysql://ann:s3cret@db.example.com/auth", "names a mysql:// database"),
        ("mysql+pymysql://ann:s3cret@db.example.com/auth", "names a mysql+pymysql:// database"),
        ("oracle://ann:s3cret@db.example.com/auth", "authserver runs on PostgreSQL"),
        ("postgresql+psycopg2://ann:s3cret@db/auth", "names the driver 'psycopg2'"),
        ("s3cret", "must be a URL like"),
    ],
)
def test_a_database_authserver_does_not_run_on_is_one_problem_without_the_password(
    given: str, says: str
) -> None:
    problems = _problems({"DATABASE_URL": given})

    assert len(problems) == 1
    assert says in problems[0]
    assert "s3cret" not in problems[0]
