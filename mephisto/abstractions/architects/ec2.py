"""`ec2`: start a router on a new EC2 instance for the run, delete it all afterwards.

    mephisto.architect.ami_id=ami-0abc... mephisto.architect.region=us-east-1

Creates, in order (each recorded in the run's ledger, see `provisioned.py`): a security
group opening the router's port, an instance whose user data installs and starts
`mephisto router` (from `router_image` with docker, else `pip install router_package`,
a wheel or git URL of this project)
with a fresh secret, and optionally an application load balancer (its own security
group on 80/443, a target group, a listener) and a Route 53 CNAME `domain_name` in
`hosted_zone_id`. The operator's token is minted locally from the secret. Teardown runs
in the reverse order and ignores what is already gone.

The secret travels in the instance's user data: anyone allowed to read the instance's
attributes (ec2:DescribeInstanceAttribute) or to run code on it can read it. It is never
logged or stored locally. AWS credentials come from boto3's usual chain (environment,
~/.aws, an instance role), never from the run config.
"""

from __future__ import annotations

import functools
import logging
import re
import shlex
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from mephisto.abstractions.architects.provisioned import (
    Ledger,
    ProvisionedArchitect,
    ProvisionedArchitectArgs,
)
from mephisto.errors import ConfigError, ProviderError

logger = logging.getLogger(__name__)

__all__ = ["EC2Architect", "EC2ArchitectArgs", "router_user_data"]

INSTALL_HINT = "pip install 'mephisto[ec2]' (boto3)"
TAG_KEY = "mephisto-architect"
_AMI = re.compile(r"ami-[0-9a-f]{8,17}")
_NOT_FOUND = ("NotFound", "InvalidGroup.NotFound", "InvalidInstanceID.NotFound",
              "LoadBalancerNotFound", "TargetGroupNotFound", "InvalidChangeBatch")


# AWS error codes that mean a setting is wrong, and the setting's key (after
# `mephisto.architect`)
_CONFIG_ERRORS = {
    "InvalidAMIID.NotFound": ".ami_id", "InvalidAMIID.Malformed": ".ami_id",
    "InvalidSubnetID.NotFound": ".subnet_id", "InvalidSubnet": ".lb_subnet_ids",
    "InvalidKeyPair.NotFound": ".key_name", "NoSuchHostedZone": ".hosted_zone_id",
    "CertificateNotFound": ".certificate_arn", "InvalidParameterValue": "",
    "ValidationError": "",
}


@dataclass
class EC2ArchitectArgs(ProvisionedArchitectArgs):
    _architect_type: str = "ec2"
    region: str = field(default="us-east-1", metadata={"help": "AWS region."})
    ami_id: str = field(default="", metadata={
        "help": "Image of the instance (Amazon Linux 2023 or Ubuntu with python3)."})
    instance_type: str = field(default="t3.small", metadata={"help": "EC2 instance type."})
    subnet_id: str = field(default="", metadata={
        "help": "Subnet of the instance (default: the default VPC's)."})
    key_name: str = field(default="", metadata={"help": "SSH key pair name (optional)."})
    router_port: int = field(default=8080, metadata={"help": "Port the router listens on."})
    allowed_cidr: str = field(default="0.0.0.0/0", metadata={
        "help": "Who may open the router (workers: everyone)."})
    router_image: str = field(default="", metadata={
        "help": "Docker image of the router to run (deploy/router/Dockerfile); "
                "empty: pip install router_package."})
    router_package: str = field(default="", metadata={
        "help": "pip requirement of this project to install when router_image is empty "
                "(a wheel URL, git+https://...@<tag>)."})
    load_balancer: bool = field(default=False, metadata={
        "help": "Put an application load balancer in front (80, or 443 with a cert)."})
    lb_subnet_ids: str = field(default="", metadata={
        "help": "Comma-separated subnets (two zones at least) for the load balancer."})
    certificate_arn: str = field(default="", metadata={
        "help": "ACM certificate for an HTTPS listener on the load balancer."})
    hosted_zone_id: str = field(default="", metadata={
        "help": "Route 53 zone in which to create domain_name (optional)."})
    domain_name: str = field(default="", metadata={
        "help": "Name workers open (a CNAME to the instance or balancer)."})


def _boto3() -> Any:
    try:
        import boto3
    except ImportError:
        raise ConfigError(f"the ec2 architect needs boto3: {INSTALL_HINT}",
                          key="mephisto.architect._architect_type") from None
    return boto3


@functools.cache
def _known_regions(boto3: Any) -> frozenset[str]:
    """EC2's regions, from botocore's bundled endpoint data (no call to AWS)."""
    return frozenset(boto3.session.Session().get_available_regions("ec2"))


def _split(value: Any) -> list[str]:
    return [part.strip() for part in str(value or "").split(",") if part.strip()]


_DOCKER_SETUP = """\
command -v docker >/dev/null || dnf install -y docker || yum install -y docker \\
    || (apt-get update && apt-get install -y docker.io)
systemctl enable --now docker
docker run -d --restart unless-stopped --name mephisto-router \\
    --env-file /etc/mephisto-router.env -p {port}:{port} {image}
"""

_PIP_SETUP = """\
command -v python3 >/dev/null || dnf install -y python3 || yum install -y python3 \\
    || (apt-get update && apt-get install -y python3)
python3 -m venv /opt/mephisto-router \\
    || (apt-get update && apt-get install -y python3-venv && python3 -m venv /opt/mephisto-router)
/opt/mephisto-router/bin/pip install --quiet {package}
useradd --system --no-create-home mephisto-router || true
cat > /etc/systemd/system/mephisto-router.service <<'MEPHISTO_UNIT'
[Unit]
Description=mephisto router
After=network-online.target
[Service]
User=mephisto-router
EnvironmentFile=/etc/mephisto-router.env
ExecStart=/opt/mephisto-router/bin/mephisto router --port {port}
Restart=always
[Install]
WantedBy=multi-user.target
MEPHISTO_UNIT
systemctl daemon-reload
systemctl enable --now mephisto-router
"""


def router_user_data(secret: str, port: int, image: str = "", package: str = "") -> str:
    """The instance's boot script: write the router's environment (owner-only), then run
    the router as a service that restarts, from a docker image or a pip install."""
    head = ("#!/bin/bash\nset -euo pipefail\numask 077\n"
            "cat > /etc/mephisto-router.env <<'MEPHISTO_ENV'\n"
            f"MEPHISTO_ROUTER_SECRET={secret}\nPORT={port}\nMEPHISTO_ENV\n")
    if image:
        return head + _DOCKER_SETUP.format(port=port, image=shlex.quote(image))
    return head + _PIP_SETUP.format(port=port, package=shlex.quote(package))


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _aws_error(exc: Exception, what: str) -> Exception:
    """A botocore error as ours: bad input is the config's fault, the rest AWS's."""
    code = _code(exc)
    if code in _CONFIG_ERRORS:
        return ConfigError(f"ec2: {what}: {exc}", key=f"mephisto.architect{_CONFIG_ERRORS[code]}")
    if code in ("AuthFailure", "UnauthorizedOperation", "InvalidClientTokenId",
                "SignatureDoesNotMatch", "AccessDenied", "ExpiredToken"):
        return ProviderError("ec2", f"{what}: AWS refused the credentials: {exc}. Set "
                             "AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY")
    return ProviderError("ec2", f"{what}: {exc}", retryable=True)


class EC2Architect(ProvisionedArchitect):
    ARCHITECT_TYPE = "ec2"
    ArgsClass = EC2ArchitectArgs
    #: how long to wait for AWS to start or stop things
    aws_timeout: ClassVar[float] = 600.0

    @classmethod
    def check_args(cls, arch: Any) -> None:
        boto3 = _boto3()
        region = str(arch.get("region") or "")
        if region not in _known_regions(boto3):
            raise ConfigError(f"mephisto.architect.region: unknown AWS region {region!r}",
                              key="mephisto.architect.region")
        ami = str(arch.get("ami_id") or "")
        if not ami:
            raise ConfigError("the ec2 architect needs mephisto.architect.ami_id (an image "
                              "with python3, e.g. Amazon Linux 2023 of your region)",
                              key="mephisto.architect.ami_id")
        if not _AMI.fullmatch(ami):
            raise ConfigError(f"mephisto.architect.ami_id: {ami!r} is no AMI id (ami-...)",
                              key="mephisto.architect.ami_id")
        try:
            port = int(arch.get("router_port", 8080))
        except (TypeError, ValueError):
            port = -1
        if not 1 <= port <= 65535:
            raise ConfigError("mephisto.architect.router_port must be 1-65535",
                              key="mephisto.architect.router_port")
        if not arch.get("router_image") and not arch.get("router_package"):
            # PyPI's `mephisto` is the original Mephisto, which has no `mephisto router`
            raise ConfigError("the ec2 architect needs mephisto.architect.router_image (an "
                              "image of deploy/router/Dockerfile in a registry) or "
                              "router_package (a pip requirement of this project: a wheel "
                              "URL, git+https://...@<tag>)",
                              key="mephisto.architect.router_package")
        if arch.get("load_balancer") and len(_split(arch.get("lb_subnet_ids"))) < 2:
            raise ConfigError("a load balancer needs mephisto.architect.lb_subnet_ids: two "
                              "subnets in different zones at least",
                              key="mephisto.architect.lb_subnet_ids")
        if bool(arch.get("hosted_zone_id")) != bool(arch.get("domain_name")):
            raise ConfigError("mephisto.architect.domain_name and hosted_zone_id go "
                              "together", key="mephisto.architect.domain_name")
        if arch.get("certificate_arn") and not arch.get("load_balancer"):
            raise ConfigError("certificate_arn is used by the load balancer: set "
                              "mephisto.architect.load_balancer=true",
                              key="mephisto.architect.certificate_arn")

    def ledger_settings(self) -> dict[str, Any]:
        return {"region": str(self.arch.get("region"))}

    # -- provisioning (blocking boto3 calls, in a worker thread) ---------------------------

    async def start_router(self, ledger: Ledger, secret: str) -> str:
        from starlette.concurrency import run_in_threadpool

        url: str = await run_in_threadpool(self._start_router_sync, ledger, secret)
        return url

    def _start_router_sync(self, ledger: Ledger, secret: str) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        arch, name = self.arch, ledger.name
        session = _boto3().session.Session(region_name=str(arch.get("region")))
        ec2 = session.client("ec2")
        port = int(arch.get("router_port", 8080))
        cidr = str(arch.get("allowed_cidr") or "0.0.0.0/0")
        step = "checking the AMI"
        try:
            ec2.describe_images(ImageIds=[str(arch.get("ami_id"))])
            step = "finding the VPC"
            vpc = self._vpc(ec2)
            lb_sg = None
            if arch.get("load_balancer"):
                step = "creating the load balancer's security group"
                lb_sg = self._security_group(ec2, ledger, "lb_security_group", f"{name}-lb",
                                             vpc, [(80, cidr), (443, cidr)])
            step = "creating the security group"
            rules: list[tuple[int, str]] = [(port, cidr)] if lb_sg is None else []
            sg = self._security_group(ec2, ledger, "security_group", name, vpc, rules)
            if lb_sg is not None:
                ec2.authorize_security_group_ingress(GroupId=sg, IpPermissions=[{
                    "IpProtocol": "tcp", "FromPort": port, "ToPort": port,
                    "UserIdGroupPairs": [{"GroupId": lb_sg}]}])
            step = "starting the instance"
            instance = self._instance(ec2, ledger, sg, secret, port)
            target = self.router_address(instance, port)
            if lb_sg is not None:
                step = "creating the load balancer"
                target = self._load_balancer(session.client("elbv2"), ledger, vpc, lb_sg,
                                             instance["InstanceId"], port)
            if arch.get("domain_name"):
                step = "creating the DNS record"
                target = self._dns_record(session.client("route53"), ledger, target)
        except ClientError as exc:
            raise _aws_error(exc, step) from None
        except BotoCoreError as exc:
            raise ProviderError("ec2", f"{step}: {exc}", retryable=True) from None
        logger.info("ec2 %s: router instance %s, served at %s", name,
                    ledger.resources.get("instance"), target)
        return target

    def _vpc(self, ec2: Any) -> str:
        subnet = str(self.arch.get("subnet_id") or "")
        if subnet:
            found = ec2.describe_subnets(SubnetIds=[subnet])["Subnets"]
            return str(found[0]["VpcId"])
        vpcs = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
        if not vpcs:
            raise ConfigError("this region has no default VPC: set "
                              "mephisto.architect.subnet_id", key="mephisto.architect.subnet_id")
        return str(vpcs[0]["VpcId"])

    @staticmethod
    def _tags(name: str, kind: str) -> list[dict[str, Any]]:
        return [{"ResourceType": kind, "Tags": [
            {"Key": "Name", "Value": name}, {"Key": TAG_KEY, "Value": name}]}]

    def _security_group(self, ec2: Any, ledger: Ledger, key: str, group_name: str, vpc: str,
                        rules: list[tuple[int, str]]) -> str:
        ledger.record(key, {"name": group_name, "vpc": vpc})  # found by name if we crash now
        group = ec2.create_security_group(
            GroupName=group_name, VpcId=vpc, Description=f"mephisto router {ledger.name}",
            TagSpecifications=self._tags(group_name, "security-group"))["GroupId"]
        ledger.record(key, {"name": group_name, "vpc": vpc, "id": group})
        if rules:
            ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[
                {"IpProtocol": "tcp", "FromPort": p, "ToPort": p,
                 "IpRanges": [{"CidrIp": c, "Description": "mephisto router"}]}
                for p, c in rules])
        return str(group)

    def _instance(self, ec2: Any, ledger: Ledger, sg: str, secret: str, port: int
                  ) -> dict[str, Any]:
        arch = self.arch
        user_data = router_user_data(secret, port, str(arch.get("router_image") or ""),
                                     str(arch.get("router_package") or ""))
        request: dict[str, Any] = {
            "ImageId": str(arch.get("ami_id")), "InstanceType": str(arch.get("instance_type")),
            "MinCount": 1, "MaxCount": 1, "UserData": user_data, "SecurityGroupIds": [sg],
            "ClientToken": f"{ledger.name}-{int(ledger.data['created'])}",
            "TagSpecifications": self._tags(ledger.name, "instance"),
            "InstanceInitiatedShutdownBehavior": "terminate",
        }
        if arch.get("subnet_id"):
            request["SubnetId"] = str(arch.get("subnet_id"))
        if arch.get("key_name"):
            request["KeyName"] = str(arch.get("key_name"))
        ledger.record("instance", None)  # found by its tag if we crash now
        instance_id = str(ec2.run_instances(**request)["Instances"][0]["InstanceId"])
        ledger.record("instance", instance_id)
        deadline = time.monotonic() + self.aws_timeout
        while True:
            try:
                found = ec2.describe_instances(InstanceIds=[instance_id])
            except Exception as exc:  # EC2 is eventually consistent: a new id may be unknown
                if not _missing(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(self.poll_interval)
                continue
            instance: dict[str, Any] = found["Reservations"][0]["Instances"][0]
            state = instance["State"]["Name"]
            if state == "running":
                return instance
            if state != "pending" or time.monotonic() > deadline:
                raise ProviderError("ec2", f"instance {instance_id} is {state}, not running")
            time.sleep(self.poll_interval)

    def router_address(self, instance: dict[str, Any], port: int) -> str:
        """The router's URL on `instance` (described by EC2, running). Tests override it
        to point at a router they run."""
        host = instance.get("PublicDnsName") or instance.get("PublicIpAddress")
        if not host:
            if self.arch.get("load_balancer"):
                return f"http://{instance.get('PrivateIpAddress')}:{port}/"
            raise ConfigError("the instance has no public address: use a subnet that "
                              "assigns one, or a load balancer",
                              key="mephisto.architect.subnet_id")
        return f"http://{host}:{port}/"

    def _load_balancer(self, elb: Any, ledger: Ledger, vpc: str, lb_sg: str,
                       instance_id: str, port: int) -> str:
        name = ledger.name[:32]
        ledger.record("target_group", {"name": name})
        group = elb.create_target_group(
            Name=name, Protocol="HTTP", Port=port, VpcId=vpc, TargetType="instance",
            HealthCheckPath="/_mephisto/router")["TargetGroups"][0]["TargetGroupArn"]
        ledger.record("target_group", {"name": name, "arn": group})
        elb.register_targets(TargetGroupArn=group, Targets=[{"Id": instance_id, "Port": port}])
        ledger.record("load_balancer", {"name": name})
        balancer = elb.create_load_balancer(
            Name=name, Subnets=_split(self.arch.get("lb_subnet_ids")), SecurityGroups=[lb_sg],
            Scheme="internet-facing", Type="application",
            Tags=[{"Key": TAG_KEY, "Value": ledger.name}])["LoadBalancers"][0]
        arn = balancer["LoadBalancerArn"]
        ledger.record("load_balancer", {"name": name, "arn": arn})
        # websockets (workers', the operator's) stay open longer than the 60 s default
        elb.modify_load_balancer_attributes(LoadBalancerArn=arn, Attributes=[
            {"Key": "idle_timeout.timeout_seconds", "Value": "600"}])
        forward = [{"Type": "forward", "TargetGroupArn": group}]
        cert = str(self.arch.get("certificate_arn") or "")
        if cert:
            elb.create_listener(LoadBalancerArn=arn, Protocol="HTTPS", Port=443,
                                Certificates=[{"CertificateArn": cert}],
                                DefaultActions=forward)
            elb.create_listener(LoadBalancerArn=arn, Protocol="HTTP", Port=80, DefaultActions=[
                {"Type": "redirect", "RedirectConfig": {
                    "Protocol": "HTTPS", "Port": "443", "StatusCode": "HTTP_301"}}])
        else:
            elb.create_listener(LoadBalancerArn=arn, Protocol="HTTP", Port=80,
                                DefaultActions=forward)
        return f"{'https' if cert else 'http'}://{balancer['DNSName']}/"

    def _dns_record(self, route53: Any, ledger: Ledger, target: str) -> str:
        domain = str(self.arch.get("domain_name")).rstrip(".")
        scheme, _, rest = target.partition("://")
        host, _, port_path = rest.partition(":")
        host = host.rstrip("/")
        record = {"zone": str(self.arch.get("hosted_zone_id")), "name": domain,
                  "value": host, "ttl": 60}
        ledger.record("dns_record", record)
        route53.change_resource_record_sets(
            HostedZoneId=record["zone"], ChangeBatch={"Changes": [_dns_change("UPSERT", record)]})
        return f"{scheme}://{domain}{':' + port_path if port_path else '/'}"

    def operator_url(self, public_url: str) -> str:
        # The operator dials the instance or balancer, not a DNS name still propagating.
        ledger = self.ledger
        if ledger is not None and "dns_record" in ledger.resources:
            record = ledger.resources["dns_record"]
            return public_url.replace(record["name"], record["value"], 1)
        return public_url

    # -- teardown --------------------------------------------------------------------------

    @classmethod
    async def destroy(cls, ledger: Ledger) -> None:
        from starlette.concurrency import run_in_threadpool

        await run_in_threadpool(cls._destroy_sync, ledger)

    @classmethod
    def _destroy_sync(cls, ledger: Ledger) -> None:
        from botocore.exceptions import ClientError

        session = _boto3().session.Session(region_name=str(ledger.settings.get("region")))
        res = ledger.resources
        try:
            if "dns_record" in res:
                record = res["dns_record"]
                _ignore_missing(lambda: session.client("route53").change_resource_record_sets(
                    HostedZoneId=record["zone"],
                    ChangeBatch={"Changes": [_dns_change("DELETE", record)]}))
                ledger.forget("dns_record")
            elb = session.client("elbv2") if "load_balancer" in res or "target_group" in res \
                else None
            if elb is not None and "load_balancer" in res:
                cls._delete_load_balancer(elb, res["load_balancer"])
                ledger.forget("load_balancer")
            if elb is not None and "target_group" in res:
                arn = res["target_group"].get("arn") or _target_group_arn(
                    elb, res["target_group"]["name"])
                if arn:
                    _ignore_missing(lambda: elb.delete_target_group(TargetGroupArn=arn))
                ledger.forget("target_group")
            ec2 = session.client("ec2")
            if "instance" in res:
                cls._terminate(ec2, res["instance"], ledger.name)
                ledger.forget("instance")
            for key in ("security_group", "lb_security_group"):
                if key in res:
                    cls._delete_security_group(ec2, res[key])
                    ledger.forget(key)
        except ClientError as exc:
            raise _aws_error(exc, f"deleting what run {ledger.name} created") from None

    @classmethod
    def _delete_load_balancer(cls, elb: Any, entry: dict[str, Any]) -> None:
        arn = entry.get("arn")
        if not arn:
            try:
                arn = elb.describe_load_balancers(Names=[entry["name"]])[
                    "LoadBalancers"][0]["LoadBalancerArn"]
            except Exception as exc:
                if _missing(exc):
                    return
                raise
        _ignore_missing(lambda: elb.delete_load_balancer(LoadBalancerArn=arn))
        deadline = time.monotonic() + cls.aws_timeout
        while time.monotonic() < deadline:  # the target group is in use until it is gone
            try:
                elb.describe_load_balancers(LoadBalancerArns=[arn])
            except Exception as exc:
                if _missing(exc):
                    return
                raise
            time.sleep(cls.poll_interval)

    @classmethod
    def _terminate(cls, ec2: Any, instance_id: str | None, name: str) -> None:
        if instance_id:
            ids = [instance_id]
        else:  # a crash between run_instances and recording its id: find it by its tag
            found = ec2.describe_instances(Filters=[{"Name": f"tag:{TAG_KEY}", "Values": [name]}])
            ids = [i["InstanceId"] for r in found["Reservations"] for i in r["Instances"]]
        if not ids:
            return
        _ignore_missing(lambda: ec2.terminate_instances(InstanceIds=ids))
        deadline = time.monotonic() + cls.aws_timeout
        while time.monotonic() < deadline:  # its security group is in use until then
            try:
                found = ec2.describe_instances(InstanceIds=ids)
            except Exception as exc:
                if _missing(exc):
                    return
                raise
            states = {i["State"]["Name"] for r in found["Reservations"] for i in r["Instances"]}
            if states <= {"terminated"}:
                return
            time.sleep(cls.poll_interval)
        raise ProviderError("ec2", f"instances {ids} did not terminate in time", retryable=True)

    @classmethod
    def _delete_security_group(cls, ec2: Any, entry: dict[str, Any]) -> None:
        group = entry.get("id")
        if not group:
            found = ec2.describe_security_groups(Filters=[
                {"Name": "group-name", "Values": [entry["name"]]},
                {"Name": "vpc-id", "Values": [entry["vpc"]]}])["SecurityGroups"]
            if not found:
                return
            group = found[0]["GroupId"]
        deadline = time.monotonic() + cls.aws_timeout
        while True:  # network interfaces of a deleted balancer linger for a while
            try:
                ec2.delete_security_group(GroupId=group)
                return
            except Exception as exc:
                if _missing(exc):
                    return
                if _code(exc) != "DependencyViolation" or time.monotonic() > deadline:
                    raise
            time.sleep(cls.poll_interval)


def _dns_change(action: str, record: dict[str, Any]) -> dict[str, Any]:
    return {"Action": action, "ResourceRecordSet": {
        "Name": record["name"], "Type": "CNAME", "TTL": record["ttl"],
        "ResourceRecords": [{"Value": record["value"]}]}}


def _target_group_arn(elb: Any, name: str) -> str | None:
    try:
        return str(elb.describe_target_groups(Names=[name])["TargetGroups"][0]["TargetGroupArn"])
    except Exception as exc:
        if _missing(exc):
            return None
        raise


def _missing(exc: Exception) -> bool:
    code = _code(exc)
    return bool(code) and (code.endswith("NotFound") or code in _NOT_FOUND
                           or "NotFound" in code)


def _ignore_missing(call: Any) -> None:
    try:
        call()
    except Exception as exc:
        if not _missing(exc):
            raise
