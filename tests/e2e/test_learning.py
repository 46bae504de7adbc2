"""The learner end to end: the operator on the local control plane, two real router processes
(one per pod of the ZetaRouter, the same signing key) in front of two real llama.cpp servers,
Prometheus scraping the routers, labelled traffic sent with the official openai client and
client feedback posted to the *other* router.

The traffic is about two topics, at several lengths: contract law, whose answers from the small
tier get a score of 0 (the larger tier was needed), and poems, whose answers get 1 (the small
tier does as well). The cut point is above the prior's score of every such request, so at first
everything goes to the small tier and every answer is labelled. The operator collects the hashed
samples from one router and the labels from the other, joins them, adopts a learned correction
(``keepShare: false``: its scores stand as fitted), the routers reload it, and law goes to the
large tier while poems stay on the small one. Then a cold-start file with the labels inverted
arrives: the candidate fitted on it does worse on the most recent (true) labels and is refused;
nothing changes.
"""

from __future__ import annotations

import json
import random
import re
import threading
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from support.cluster import apply, events_for, wait_for
from support.fixtures_cluster import StartOperator
from support.fixtures_prometheus import StartPrometheus
from zeta_router.autoscale.metrics import PrometheusSource
from zeta_router.kube import Kube, api_path
from zeta_router.learning.cycle import model_id
from zeta_router.render import names
from zeta_router.scoring.learned import LearnedCorrection
from zeta_router.scoring.scorer import default_scorer
from zeta_router_dev.local.configmap_sync import ConfigMapSync
from zeta_router_dev.local.llama import LlamaServer
from zeta_router_dev.local.operator_proc import OperatorProcess
from zeta_router_dev.local.prometheus import ScrapeTarget, pod_labels
from zeta_router_dev.local.router_proc import RouterProcess, start_router

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.cluster,
    pytest.mark.prometheus,
    pytest.mark.llama,
    pytest.mark.slow,
]

# "... (35 most recent of 140 labels)": the labels a verdict was reached on.
LABELS_IN = re.compile(r"of (\d+) labels\)")
NAME = "learner"
LAW = [
    "Is an oral agreement to sell {x} enforceable under the statute of frauds?",
    "Can a tenant withhold rent for {x} when the landlord breaches the lease?",
    "Does a contract to deliver {x} signed by a minor bind the minor?",
    "What damages can the buyer recover when the seller of {x} repudiates the contract?",
    "Is a promise to gift {x} without consideration an enforceable contract?",
]
POEMS = [
    "Write a short poem about {x} at dawn.",
    "Compose a haiku about {x} in the rain.",
    "Write four rhyming lines about {x} and the sea.",
    "Write a cheerful limerick about {x}.",
    "Write a gentle lullaby verse about {x}.",
]
THINGS = ["a horse", "a painting", "a small farm", "old books", "a sailboat", "a violin"]
FILLER = [
    "Please keep it brief.",
    "I am asking for a friend who is curious about this.",
    "Some context: this came up in a conversation over dinner last week.",
    "Answer in plain words, without jargon, as if to a newcomer.",
    "There is no rush, but I would like to understand it properly before tomorrow.",
]
KEY = "learning-e2e-key-0123456789abcdef"


def prompt(rng: random.Random, topic: list[str]) -> str:
    """A request of the topic, with 0-2 neutral sentences around it so that its length (all the
    prior sees) says nothing of its topic."""
    core = rng.choice(topic).format(x=rng.choice(THINGS))
    extra = rng.sample(FILLER, rng.randint(0, 2))
    return " ".join([*extra[: len(extra) // 2], core, *extra[len(extra) // 2 :]])


def prompts(seed: int, n: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    return [
        ("law", prompt(rng, LAW)) if i % 2 == 0 else ("poem", prompt(rng, POEMS)) for i in range(n)
    ]


THRESHOLD = 0.8


def prior_scores(seed: int, n: int) -> list[float]:
    return [
        default_scorer().score_body({"messages": [{"role": "user", "content": p}]})
        for _, p in prompts(seed, n)
    ]


def zetarouter(
    threshold: float, cold_start: dict[str, Any] | None = None, learning: bool = True
) -> dict[str, Any]:
    tier = {"engine": "llamacpp", "model": "SmolLM2-135M-Instruct"}
    sources: dict[str, Any] = {"feedback": True}
    if cold_start is not None:
        sources["coldStart"] = cold_start
    return {
        "apiVersion": "zeta.ai/v1alpha1",
        "kind": "ZetaRouter",
        "metadata": {"name": NAME},
        "spec": {
            "tiers": [
                {**tier, "name": "small", "replicas": {"min": 1, "max": 1}},
                {**tier, "name": "large", "replicas": {"min": 1, "max": 1}},
            ],
            "router": {"contexts": [{"name": "default", "thresholds": [threshold]}]},
            "learning": {
                "enabled": learning,
                "mode": "apply",
                "interval": "5s",
                # The evidence bar follows minLabels (scoring.learner.LearnerConfig.for_labels:
                # 30 % of it in decisive held-out labels); about half of this traffic's labels
                # are ties, so a bar of 12 is met by the 35 held out of 140 labels.
                "minLabels": 40,
                "heldOutShare": 0.25,
                "keepShare": False,
                "sampleTtl": "1h",
                "sources": sources,
            },
        },
    }


@pytest.fixture
def learning_operator(start_operator: StartOperator) -> OperatorProcess:
    return start_operator({})


def zr(kube: Kube, namespace: str) -> dict[str, Any]:
    return kube.get(api_path("zeta.ai/v1alpha1", "zetarouters", namespace, NAME))


def context_status(kube: Kube, namespace: str) -> dict[str, Any]:
    learning = (zr(kube, namespace).get("status") or {}).get("learning") or {}
    for c in learning.get("contexts") or []:
        if c.get("name") == "default":
            return dict(c)
    return {}


def routing(kube: Kube, namespace: str) -> dict[str, Any]:
    cm = kube.get(api_path("v1", "configmaps", namespace, f"{NAME}-routing"))
    doc: dict[str, Any] = yaml.safe_load(cm["data"]["routing.yaml"])
    return doc


def pods_by_tier(kube: Kube, namespace: str) -> dict[str, dict[str, Any]]:
    items = kube.list(api_path("v1", "pods", namespace), f"app.kubernetes.io/instance={NAME}")[
        "items"
    ]
    return {p["metadata"]["labels"]["zeta.ai/tier"]: p for p in items}


class Traffic:
    """Sends labelled prompts through the routers in turn and posts each answer's score to the
    other router; records which tier answered."""

    def __init__(self, routers: list[RouterProcess]) -> None:
        self.routers = routers
        self.clients = [
            openai.OpenAI(base_url=r.base_url, api_key="unused", max_retries=1, timeout=120)
            for r in routers
        ]
        self.served: list[tuple[str, str]] = []  # (topic, tier)
        self.feedback = 0
        self.errors: list[str] = []

    def send(self, items: list[tuple[str, str]], invert: bool = False) -> None:
        threads = [
            threading.Thread(target=self._run, args=(items[i :: len(self.routers)], i, invert))
            for i in range(len(self.routers))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(600)

    def _run(self, items: list[tuple[str, str]], i: int, invert: bool) -> None:
        client = self.clients[i]
        other = self.routers[(i + 1) % len(self.routers)]
        for topic, text in items:
            try:
                raw = client.chat.completions.with_raw_response.create(
                    model="zeta",
                    messages=[{"role": "user", "content": text}],
                    max_tokens=4,
                )
            except openai.OpenAIError as e:
                self.errors.append(str(e))
                continue
            tier = raw.headers["x-zeta-tier"]
            self.served.append((topic, tier))
            score = 0.0 if (topic == "law") != invert else 1.0
            body = json.dumps({"request_id": raw.headers["x-request-id"], "score": score})
            status, _ = post_json(other.url + "/v1/feedback", body)
            if status == 200:
                self.feedback += 1
            else:
                self.errors.append(f"feedback: HTTP {status}")


def post_json(url: str, body: str) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(
        url, data=body.encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def share_large(served: list[tuple[str, str]], topic: str) -> float:
    tiers = [t for top, t in served if top == topic]
    return sum(t == "large" for t in tiers) / max(1, len(tiers))


def test_the_operator_learns_from_feedback_and_refuses_a_model_of_inverted_labels(
    kube: Kube,
    namespace: str,
    learning_operator: OperatorProcess,
    llama_servers: dict[str, LlamaServer],
    prometheus_factory: StartPrometheus,
    addresses: Path,
    tmp_path: Path,
) -> None:
    threshold = THRESHOLD
    assert max(prior_scores(1, 140) + prior_scores(2, 40)) < threshold  # all small at first
    # The routers' key, chosen here (the operator keeps a Secret it finds): the routers hash
    # their samples' n-grams with it, and the operator hashes the cold-start file alike.
    apply(
        kube,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": names.router_key_secret_name(NAME)},
            "stringData": {names.ROUTER_KEY_FIELD: KEY + "\n"},
        },
        namespace,
    )
    # Learning is turned on once the routers run and the operator knows where they listen.
    apply(kube, zetarouter(threshold, learning=False), namespace)
    wait_for(lambda: len(pods_by_tier(kube, namespace)) == 2, 60, "the two pods")
    wait_for(
        lambda: all(p["status"].get("podIP") for p in pods_by_tier(kube, namespace).values()),
        60,
        "pod addresses",
    )
    urls = {name: s.url for name, s in llama_servers.items()}
    config = tmp_path / "routing.yaml"
    sync = ConfigMapSync(kube, namespace, NAME, config, urls)
    wait_for(sync.sync_once, 60, "the routing ConfigMap")
    key_file = tmp_path / "request-key"
    key_file.write_text(KEY + "\n")
    routers: dict[str, RouterProcess] = {}
    try:
        sync.start()
        for tier in ("small", "large"):
            routers[tier] = start_router(
                [
                    "--config",
                    str(config),
                    "--local-tier",
                    tier,
                    "--reload-interval",
                    "0.2",
                    "--request-key-file",
                    str(key_file),
                ],
                tmp_path,
            )
        # The stand-in kubelet's pod addresses lead nowhere: tell the operator where each
        # pod's router listens instead.
        pods = pods_by_tier(kube, namespace)
        addresses.write_text(
            json.dumps(
                {
                    pods[t]["status"]["podIP"]: r.admin_url.removeprefix("http://")
                    for t, r in routers.items()
                }
            )
        )
        apply(kube, zetarouter(threshold), namespace)
        prometheus = prometheus_factory(
            [
                ScrapeTarget(
                    r.admin_url.removeprefix("http://"),
                    pod_labels(namespace, NAME, t, "router"),
                )
                for t, r in routers.items()
            ]
        )
        traffic = Traffic([routers["small"], routers["large"]])

        # 1. Everything goes to the small tier at first, and every answer gets a score. (The
        # learner is live: once it adopts a model, law may go large during this very phase.)
        traffic.send(prompts(1, 140))
        assert not traffic.errors, traffic.errors[:3]
        assert traffic.served[0][1] == traffic.served[1][1] == "small"
        # Every answer of the small tier got a score: that many labels, once all are joined.
        labels = sum(tier == "small" for _, tier in traffic.served)
        assert labels >= 100

        def adopted_messages() -> list[str]:
            return [
                str(e.get("message", ""))
                for e in events_for(kube, namespace, NAME)
                if e.get("reason") == "LearnedModelAdopted"
            ]

        def refitted_on_all() -> bool:
            status = context_status(kube, namespace)
            return status.get("source") == "learned" and f"of {labels} labels)" in str(
                status.get("message")
            )

        wait_for(refitted_on_all, 300, f"a learned model, and a refit on all {labels} labels")
        status = context_status(kube, namespace)
        assert status["labels"] == labels, status
        assert status["modelLabels"] >= 60, status
        assert status.get("adoptedAt"), status
        # Events are posted in the background: wait for the one the status already reflects.
        wait_for(lambda: bool(adopted_messages()), 30, "a LearnedModelAdopted Event")
        assert "beats" in adopted_messages()[0]
        store = kube.get(api_path("v1", "configmaps", namespace, f"{NAME}-learned"))
        assert "default" in yaml.safe_load(store["data"]["models.yaml"])
        doc = routing(kube, namespace)
        learned = next(c for c in doc["contexts"] if c["name"] == "default")["learned"]
        assert learned["ngramCount"] > 0
        # Both routers run it.
        for r in routers.values():
            wait_for(
                lambda r=r: r.metric("zeta_router_config_generation") >= doc["generation"],
                30,
                "the routers to reload the routing config",
            )
        # Samples and labels reached Prometheus too.
        source = PrometheusSource(prometheus.url, timeout_seconds=5)
        wait_for(
            lambda: float(
                (source.query('sum(zeta_router_learning_labels_total{source="feedback"})')
                 or [{"value": [0, "0"]}])[0]["value"][1]
            ) >= 40,
            60,
            "the feedback labels in Prometheus",
        )  # fmt: skip

        # 2. Decisions changed as the labels said: law to the large tier, poems to the small.
        after = Traffic([routers["small"], routers["large"]])
        after.send(prompts(2, 40))
        assert not after.errors, after.errors[:3]
        law, poem = share_large(after.served, "law"), share_large(after.served, "poem")
        assert law >= 0.5, after.served
        assert law - poem >= 0.4, after.served

        # 3. A labelled file that says the opposite: its model is refused on the recent labels.
        rows = ["prompt,label"] + [
            f'"{text}",{0 if topic == "law" else 1}' for topic, text in prompts(3, 240)
        ]
        apply(
            kube,
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "inverted-labels"},
                "data": {"labels.csv": "\n".join(rows) + "\n"},
            },
            namespace,
        )
        apply(kube, zetarouter(threshold, {"configMap": "inverted-labels"}), namespace)

        # A refit of phase 1's labels alone may have been refused already: wait for the verdict
        # on a refit that includes the file's labels.
        def refused_with_file() -> bool:
            status = context_status(kube, namespace)
            return status.get("verdict") == "refused" and int(status.get("labels", 0)) > 240

        wait_for(refused_with_file, 240, "the model of the inverted file refused")
        status = context_status(kube, namespace)
        assert f"of {status['labels']} labels)" in status["message"], status
        assert status["apgrAfter"] < status["apgrBefore"]
        assert status["labels"] > 240

        def reasons() -> list[str]:
            return [str(e.get("reason")) for e in events_for(kube, namespace, NAME)]

        wait_for(
            lambda: {"ColdStartFileRead", "LearnedModelRefused"} <= set(reasons()),
            30,
            "the ColdStartFileRead and LearnedModelRefused Events",
        )
        # Refits of phase 1 and 2's labels (fewer than 240) may adopt more than once; no refit
        # that includes the inverted file's 240 labels ever may.
        adopted_on = [int(n) for m in adopted_messages() for n in LABELS_IN.findall(m)]
        assert adopted_on, adopted_messages()
        assert max(adopted_on) < 240, adopted_messages()
        # The model the routers still run is the one in use, not the file's.
        still = next(c for c in routing(kube, namespace)["contexts"] if c["name"] == "default")
        assert still["learned"]["ngramCount"] > 0
        assert model_id(LearnedCorrection.model_validate(still["learned"])) == status["modelId"]
    finally:
        sync.stop()
        for r in routers.values():
            r.stop()
