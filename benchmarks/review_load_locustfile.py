"""Locust users for benchmarks/review_load.py: reviewers who claim a nucleus, look at it for a second, and save.

Not run on its own: review_load.py sets REVIEW_LOAD_USERS (a JSON file of reviewer tokens), REVIEW_LOAD_QUERY
(the queue's query string), REVIEW_LOAD_THINK_S and REVIEW_LOAD_SAVES (where each process writes the label
ids its saves were answered with, to find lost writes).
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import uuid

from locust import FastHttpUser, events, task

_tokens = json.load(open(os.environ["REVIEW_LOAD_USERS"]))
_next_token = itertools.cycle(_tokens)
_token_lock = threading.Lock()
_saved: list[dict] = []   # every 201 answer: {"label": id, "nucleus": id, "class_index": i, "user": name}
QUERY = os.environ.get("REVIEW_LOAD_QUERY", "")
THINK_S = float(os.environ.get("REVIEW_LOAD_THINK_S", "1"))


class Reviewer(FastHttpUser):
    """FastHttpUser (geventhttpclient) rather than HttpUser (requests): the load generator shares the
    machine's two cores with the server, and costs about a fifth of the CPU per request this way."""

    # The think time is inside the task (between seeing and saving), so no wait between tasks.
    wait_time = staticmethod(lambda: 0)

    def on_start(self):
        with _token_lock:
            self.account = next(_next_token)
        self.auth = {"Authorization": f"Token {self.account['token']}"}
        self.project = self.account["project"]

    @task
    def claim_and_save(self):
        with self.client.get(f"/api/projects/{self.project}/review/next/?{QUERY}", name="next",
                             headers=self.auth, catch_response=True) as response:
            if response.status_code == 204:
                response.success()  # the queue is empty
                self.stop()
                return
            if response.status_code != 200:
                response.failure(f"{response.status_code}: {response.text[:200]}")
                return
            item = response.json()
        self._sleep(THINK_S)
        classes = item["label_set"]["classes"]
        choice = item["prediction"]["class_index"] if item.get("prediction") else classes[0]["index"]
        body = {"label_set": item["label_set"]["name"], "class_index": choice, "version": item["version"],
                "client_id": uuid.uuid4().hex}
        with self.client.post(f"/api/nuclei/{item['nucleus']['id']}/labels/", json=body, name="save",
                              headers=self.auth, catch_response=True) as response:
            if response.status_code == 201:
                _saved.append({"label": response.json()["id"], "nucleus": item["nucleus"]["id"],
                               "class_index": choice, "user": self.account["username"]})
            elif response.status_code == 409:
                response.success()  # a decision the server refused cleanly: counted by the driver, not an error
            else:
                response.failure(f"{response.status_code}: {response.text[:200]}")

    def _sleep(self, seconds: float) -> None:
        import gevent

        gevent.sleep(seconds)


@events.quitting.add_listener
def _write_saves(environment, **kwargs):
    path = os.environ.get("REVIEW_LOAD_SAVES")
    if path:
        with open(path, "w") as out:
            json.dump(_saved, out)
