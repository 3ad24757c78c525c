"""Storage credentials reach cluster executors, and Spark's redaction hides their secrets."""
import re

from jobs.lib.session import REDACTION_REGEX, storage_env


def test_storage_variables_become_executor_env():
    env = {"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "s", "AWS_ENDPOINT_URL": "http://minio:9000",
           "FSSPEC_S3_ANON": "false", "AZURE_STORAGE_ACCOUNT_KEY": "k", "GOOGLE_APPLICATION_CREDENTIALS": "/k.json",
           "HOME": "/root", "PATH": "/bin", "MY_AWS_THING": "x"}
    assert storage_env(env) == {f"spark.executorEnv.{k}": env[k] for k in
                                ("AWS_ACCESS_KEY_ID", "AWS_ENDPOINT_URL", "AWS_SECRET_ACCESS_KEY",
                                 "AZURE_STORAGE_ACCOUNT_KEY", "FSSPEC_S3_ANON", "GOOGLE_APPLICATION_CREDENTIALS")}


def test_redaction_regex_hides_secret_names_and_keeps_the_rest():
    secret = ["spark.executorEnv.AWS_SECRET_ACCESS_KEY", "spark.executorEnv.AWS_SESSION_TOKEN",
              "spark.executorEnv.AZURE_STORAGE_ACCOUNT_KEY", "spark.executorEnv.AZURE_STORAGE_SAS_TOKEN",
              "spark.hadoop.fs.s3a.access.key", "spark.hadoop.fs.s3a.secret.key",
              "spark.executorEnv.AWS_ACCESS_KEY_ID"]  # an identifier, hidden too
    shown = ["spark.executorEnv.AWS_ENDPOINT_URL", "spark.executorEnv.AWS_DEFAULT_REGION", "spark.master"]
    assert [k for k in secret if not re.search(REDACTION_REGEX, k)] == []
    assert [k for k in shown if re.search(REDACTION_REGEX, k)] == []
