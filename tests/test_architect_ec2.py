"""The `ec2` architect against moto's stub of AWS: the contract suite, the exact
resources it creates (ports, user data, tags), the load balancer and DNS record, bad
configs, and what a crash leaves. The instance runs nothing under moto: the
`router_address` hook starts a real router with the secret found in the instance's
user data (as the instance would) and gives its local URL."""

from __future__ import annotations

import base64
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mephisto.abstractions.architects.ec2 import TAG_KEY, EC2Architect
from mephisto.abstractions.architects.provisioned import Ledger, ledgers
from mephisto.errors import ConfigError
from mephisto.testing.architect_contract import ArchitectContract, ArchitectHarness
from mephisto.testing.router import RouterProcess
from mephisto.utils.args import Args

boto3 = pytest.importorskip("boto3")
moto = pytest.importorskip("moto")

REGION = "us-east-1"
PACKAGE = "mephisto @ https://files.example.org/mephisto-0.1.0-py3-none-any.whl"


class EC2Harness(ArchitectHarness):
    remote = True
    provisions = True

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.ec2 = boto3.client("ec2", region_name=REGION)
        self.elb = boto3.client("elbv2", region_name=REGION)
        self.ami = self.ec2.register_image(
            Name="router-base", Architecture="x86_64", RootDeviceName="/dev/xvda",
            VirtualizationType="hvm")["ImageId"]
        self.routers: dict[str, RouterProcess] = {}
        self.secrets: dict[str, str] = {}

    def architect_config(self, **extra: Any) -> dict[str, Any]:
        return {"_architect_type": "ec2", "region": REGION, "ami_id": self.ami,
                "router_package": PACKAGE, "connect_timeout": 20, **extra}

    def broken_configs(self) -> list[dict[str, Any]]:
        return [
            self.architect_config(region="mars-north-1"),
            self.architect_config(ami_id=""),
            self.architect_config(ami_id="ubuntu-22.04"),
            self.architect_config(router_port=0),
            self.architect_config(load_balancer=True),
            self.architect_config(domain_name="tasks.example.org"),
            self.architect_config(token_ttl="soon"),
            self.architect_config(name="../../etc"),
            self.architect_config(router_package=""),
        ]

    def user_data(self, instance_id: str) -> str:
        found = self.ec2.describe_instance_attribute(InstanceId=instance_id,
                                                     Attribute="userData")
        return base64.b64decode(found["UserData"]["Value"]).decode()

    def router_address(self, instance: dict[str, Any], port: int) -> str:
        """What the instance would do: run `mephisto router` with the secret of its
        user data."""
        instance_id = instance["InstanceId"]
        match = re.search(r"^MEPHISTO_ROUTER_SECRET=(\S+)$", self.user_data(instance_id),
                          re.MULTILINE)
        assert match is not None
        self.secrets[instance_id] = match.group(1)
        router = RouterProcess(self.tmp_path / instance_id, match.group(1)).start()
        self.routers[instance_id] = router
        return router.url

    def provisioned(self) -> list[str]:
        tagged = [{"Name": "tag-key", "Values": [TAG_KEY]}]
        found = [f"instance {i['InstanceId']}"
                 for r in self.ec2.describe_instances(Filters=tagged)["Reservations"]
                 for i in r["Instances"] if i["State"]["Name"] != "terminated"]
        found += [f"security group {g['GroupId']}" for g in
                  self.ec2.describe_security_groups(Filters=tagged)["SecurityGroups"]]
        found += [f"load balancer {b['LoadBalancerName']}"
                  for b in self.elb.describe_load_balancers()["LoadBalancers"]]
        found += [f"target group {g['TargetGroupName']}"
                  for g in self.elb.describe_target_groups()["TargetGroups"]]
        route53 = boto3.client("route53", region_name=REGION)
        for zone in route53.list_hosted_zones()["HostedZones"]:
            found += [f"dns {r['Name']}" for r in route53.list_resource_record_sets(
                HostedZoneId=zone["Id"])["ResourceRecordSets"] if r["Type"] == "CNAME"]
        return found

    def close(self) -> None:
        for router in self.routers.values():
            router.kill()


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    # moto's hundreds of public AMIs take seconds to load per test; one is registered
    monkeypatch.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
    monkeypatch.setattr(EC2Architect, "poll_interval", 0.01)
    with moto.mock_aws():
        yield


@pytest.fixture
def ec2_harness(aws: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                ) -> Iterator[EC2Harness]:
    harness = EC2Harness(tmp_path)
    monkeypatch.setattr(EC2Architect, "router_address",
                        lambda self, instance, port: harness.router_address(instance, port))
    try:
        yield harness
    finally:
        harness.close()


class TestEC2Architect(ArchitectContract):
    @pytest.fixture
    def harness(self, ec2_harness: EC2Harness) -> ArchitectHarness:
        return ec2_harness


def _launch(operator: Any, harness: EC2Harness, task_html: Path, **arch: Any) -> Any:
    from mephisto.abstractions.blueprints.static_task import SharedStaticTaskState
    from mephisto.testing.fixtures import static_run_config

    config = static_run_config(task_html)
    config["architect"] = harness.architect_config(**arch)
    state = SharedStaticTaskState(static_task_data=[{"text": "a"}])
    return operator._runs[operator.launch_task_run(config, state)]


def test_provisioning_creates_exactly_the_instance_and_its_security_group(
        operator: Any, mephisto_db: Any, ec2_harness: EC2Harness, task_html: Path,
        tmp_path: Path) -> None:
    h = ec2_harness
    live = _launch(operator, h, task_html, instance_type="t3.micro", name="run-one")
    (instance_id,) = h.routers
    group_id = live.architect.ledger.resources["security_group"]["id"]
    assert h.provisioned() == [f"instance {instance_id}", f"security group {group_id}"]
    (instance,) = h.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0][
        "Instances"]
    assert instance["ImageId"] == h.ami and instance["InstanceType"] == "t3.micro"
    assert {"Key": TAG_KEY, "Value": "run-one"} in instance["Tags"]
    (group,) = h.ec2.describe_security_groups(
        GroupIds=[g["GroupId"] for g in instance["SecurityGroups"]])["SecurityGroups"]
    assert group["GroupName"] == "run-one"
    assert [(p["IpProtocol"], p["FromPort"], p["ToPort"], [r["CidrIp"] for r in p["IpRanges"]])
            for p in group["IpPermissions"]] == [("tcp", 8080, 8080, ["0.0.0.0/0"])]
    script = h.user_data(instance_id)
    assert script.startswith("#!/bin/bash\n")
    assert f"pip install --quiet '{PACKAGE}'\n" in script
    assert "ExecStart=/opt/mephisto-router/bin/mephisto router --port 8080" in script
    # the router started with the user data's secret accepted the locally minted token
    assert h.routers[instance_id].status()["operator"] is True
    # the secret is nowhere on disk but in the user data
    secret = h.secrets[instance_id].encode()
    ledger_path = live.architect.ledger.path
    assert ledger_path.stat().st_mode & 0o777 == 0o600
    data_dir = ledger_path.parent.parent
    for path in [*data_dir.rglob("*"), tmp_path / "mephisto.db"]:
        if path.is_file():
            assert secret not in path.read_bytes(), path
    operator.shutdown()
    assert h.provisioned() == []
    assert h.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0][
        "Instances"][0]["State"]["Name"] == "terminated"


def test_a_docker_image_runs_instead_of_pip(operator: Any, ec2_harness: EC2Harness,
                                            task_html: Path) -> None:
    _launch(operator, ec2_harness, task_html, router_image="registry.example.org/router:1",
            router_port=9000)
    (instance_id,) = ec2_harness.routers
    script = ec2_harness.user_data(instance_id)
    assert "--env-file /etc/mephisto-router.env -p 9000:9000 registry.example.org/router:1" \
        in script
    assert "pip install" not in script


def _args(harness: EC2Harness, **arch: Any) -> Args:
    from mephisto.operations.hydra_config import resolve_run_config
    from mephisto.testing.fixtures import static_run_config

    config = static_run_config("task.html")
    config["architect"] = harness.architect_config(**arch)
    return resolve_run_config(config).args


def test_a_load_balancer_and_a_dns_record(ec2_harness: EC2Harness) -> None:
    h = ec2_harness
    subnets = [s["SubnetId"] for s in h.ec2.describe_subnets()["Subnets"]][:2]
    route53 = boto3.client("route53", region_name=REGION)
    zone = route53.create_hosted_zone(Name="example.org", CallerReference="t")["HostedZone"]
    args = _args(h, name="lb-run", load_balancer=True, lb_subnet_ids=",".join(subnets),
                 hosted_zone_id=zone["Id"], domain_name="tasks.example.org")
    architect = EC2Architect(args)
    ledger = Ledger.create("ec2", "lb-run", region=REGION)
    architect.ledger = ledger
    url = architect._start_router_sync(ledger, "s" * 43)
    assert url == "http://tasks.example.org/"
    res = ledger.resources
    assert sorted(res) == ["dns_record", "instance", "lb_security_group", "load_balancer",
                           "security_group", "target_group"]
    (balancer,) = h.elb.describe_load_balancers()["LoadBalancers"]
    assert architect.operator_url(url) == f"http://{balancer['DNSName']}/"
    (listener,) = h.elb.describe_listeners(LoadBalancerArn=balancer["LoadBalancerArn"])[
        "Listeners"]
    assert (listener["Protocol"], listener["Port"]) == ("HTTP", 80)
    (group,) = h.elb.describe_target_groups()["TargetGroups"]
    assert (group["Port"], group["HealthCheckPath"]) == (8080, "/_mephisto/router")
    lb_sg, sg = (h.ec2.describe_security_groups(GroupIds=[res[k]["id"]])["SecurityGroups"][0]
                 for k in ("lb_security_group", "security_group"))
    assert sorted(p["FromPort"] for p in lb_sg["IpPermissions"]) == [80, 443]
    (rule,) = sg["IpPermissions"]  # the router's port, from the balancer only
    assert rule["FromPort"] == 8080 and not rule["IpRanges"]
    assert [p["GroupId"] for p in rule["UserIdGroupPairs"]] == [res["lb_security_group"]["id"]]
    records = [r for r in route53.list_resource_record_sets(HostedZoneId=zone["Id"])[
        "ResourceRecordSets"] if r["Type"] == "CNAME"]
    assert [(r["Name"].rstrip("."), r["ResourceRecords"][0]["Value"]) for r in records] == [
        ("tasks.example.org", balancer["DNSName"])]
    assert len(h.provisioned()) == 6
    EC2Architect._destroy_sync(ledger)
    assert h.provisioned() == [] and ledger.resources == {}
    EC2Architect._destroy_sync(Ledger.load(ledger.path))  # idempotent, from the file


def test_an_unknown_ami_fails_the_launch_and_leaves_nothing(
        operator: Any, ec2_harness: EC2Harness, task_html: Path) -> None:
    with pytest.raises(ConfigError) as info:
        _launch(operator, ec2_harness, task_html, ami_id="ami-0123456789abcdef0")
    assert info.value.key == "mephisto.architect.ami_id"
    assert "ami-0123456789abcdef0" in str(info.value)
    assert ec2_harness.provisioned() == [] and ledgers() == []


def test_a_crash_between_creating_and_recording_is_cleaned_up(
        ec2_harness: EC2Harness) -> None:
    """The ledger says an instance and a group were being made, without their ids (the
    process died in the call): cleanup finds them by tag and name."""
    h = ec2_harness
    vpc = h.ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    ledger = Ledger.create("ec2", "crashed", region=REGION)
    ledger.data["pid"] = 0
    ledger.record("security_group", {"name": "crashed", "vpc": vpc})
    ledger.record("instance", None)
    group = h.ec2.create_security_group(GroupName="crashed", Description="d", VpcId=vpc,
                                        TagSpecifications=EC2Architect._tags("crashed",
                                                                             "security-group"))
    h.ec2.run_instances(ImageId=h.ami, MinCount=1, MaxCount=1, SecurityGroupIds=[
        group["GroupId"]], TagSpecifications=EC2Architect._tags("crashed", "instance"))
    assert len(h.provisioned()) == 2
    assert EC2Architect.cleanup_leftovers() == ["ec2:crashed"]
    assert h.provisioned() == [] and ledgers() == []


def test_without_boto3_the_error_names_the_install_command(
        monkeypatch: pytest.MonkeyPatch, aws: None, tmp_path: Path) -> None:
    harness = EC2Harness(tmp_path)
    monkeypatch.setitem(sys.modules, "boto3", None)
    with pytest.raises(ConfigError) as info:
        _args(harness)
    assert "pip install 'mephisto[ec2]'" in str(info.value)
