"""Oracle corpus: fleetrun's ssh_config resolution must print what `ssh -G -F FILE HOST` prints.

Runs the real OpenSSH client (installed with the lab's openssh packages) on every snippet and compares
hostname, port, user, identityfile, proxyjump, proxycommand, userknownhostsfile, globalknownhostsfile,
stricthostkeychecking, connecttimeout, hostkeyalias, certificatefile, identitiesonly, serveraliveinterval,
serveralivecountmax, hashknownhosts and controlpath; snippets ssh refuses must be refused too, with
file:line. HOME stays the real one (the passwd home) except where a case says why.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fleetrun.errors import UsageError
from fleetrun.sshconfig import ConfigError, Preset, SshConfigSource, load
from fleetrun.sshconfig.keywords import format_hop, parse_hop
from fleetrun.sshconfig.tokens import local_info, tilde_expand

SSH = shutil.which("ssh")
pytestmark = pytest.mark.skipif(SSH is None, reason="the OpenSSH client (ssh) is not installed: make sshd")
FIELDS = ("hostname", "port", "user", "identityfile", "proxyjump", "proxycommand", "userknownhostsfile",
          "globalknownhostsfile", "stricthostkeychecking", "connecttimeout", "hostkeyalias", "certificatefile",
          "identitiesonly", "serveraliveinterval", "serveralivecountmax", "hashknownhosts", "controlpath",
          "sendenv", "setenv")


@dataclass
class Case:
    config: str  # {d} is the case's temporary directory
    host: str
    files: dict[str, str] = field(default_factory=dict)  # more files under {d}, e.g. for Include
    user: str | None = None  # like ssh -l (fleetrun: the inventory's or --user's user)
    port: int | None = None  # like ssh -p
    fake_home: bool = False  # HOME -> {d}/home (both tools), for Include's ~, which follows $HOME
    error: str | None = None  # both must refuse; ours must say this (and name the file and line)


CASES = {
    "hostname-port-user": Case("Host web01\n  HostName 10.1.2.3\n  Port 2222\n  User deploy\n", "web01"),
    "no-match-defaults": Case("Host other\n  Port 1\n", "web01"),
    "first-value-wins": Case("Host web*\n  Port 2200\nHost web01\n  Port 3300\n  User a\nHost *\n  User b\n",
                             "web01"),
    "host-glob-question": Case("Host db?\n  Port 5432\n", "db1"),
    "host-comma-is-literal": Case("Host a,b\n  Port 1\nHost *\n  Port 3\n", "a"),
    "host-case-sensitive": Case("Host WEB01\n  Port 1\n", "web01"),
    "host-negation-wins": Case("Host *.example.com !bad.example.com\n  Port 2\n", "bad.example.com"),
    "host-negation-other": Case("Host !bad.example.com *.example.com\n  Port 2\n", "good.example.com"),
    "host-only-negated-never-matches": Case("Host !bad\n  Port 2\n", "good"),
    "hostname-token": Case("Host web01\n  HostName %h.corp.example\n", "web01"),
    "hostname-lowercased": Case("Host web01\n  HostName Web01.Example.COM\n", "web01"),
    # ssh.c rewrites an address in its numeric form (what the final pass and %h see), unless only case differs
    "hostname-address-canonical": Case("Host a\n  HostName 010.1.1.1\nMatch final host 8.1.1.1\n  Port 2230\n"
                                       "Host *\n  IdentityFile /k_%h\n", "a"),
    "host-arg-address-canonical": Case("Host *\n  UserKnownHostsFile /kh_%h\n", "127.1"),
    "hostname-ipv6-case-kept": Case("Host a\n  HostName FE80::A\nMatch final host fe80::a\n  Port 2231\n", "a"),
    # ssh.c is_addr(): a name with ':' or '%' is an address to it, never lower-cased, even where
    # getaddrinfo() refuses it
    "hostname-colon-case-kept": Case("Host *\n  HostName A:B\n", "x"),
    "host-arg-zone-case-kept": Case("Host *\n  UserKnownHostsFile /k_%h\n", "FE80::A%ETH0"),
    "hostname-percent-case-kept": Case("Host x\n  HostName Web%%1\n", "x"),
    "hostname-ipv6-compressed": Case("Host a\n  HostName 2001:DB8:0:0::1\n", "a"),
    "hostname-percent": Case("Host x\n  HostName a%%b\n", "x"),
    "key-equals-value": Case("Host=web01\nPort=2022\nUser = \"deploy\"\n", "web01"),
    "quoted-and-comment": Case("Host web01 # the web box\n  User \"ops\" # comment\n  Port 2200 # c\n", "web01"),
    "nul-ends-the-line": Case("Host *\n  User ops\0 more\nPort 2232\0 extra\n", "x"),
    "connecttimeout-comment": Case("Host *\n  ConnectTimeout 5 # seconds\n", "x"),
    "connecttimeout-units": Case("Host *\n  ConnectTimeout 1m5s\n", "x"),
    # `none` is readconf.c's -1, "unset": the next ConnectTimeout/ServerAliveInterval line still sets it
    # Debian's keepalive patch makes SetupTimeout (like ProtocolKeepAlives) ServerAliveInterval
    "setuptimeout-is-serveraliveinterval": Case("Host *\n  SetupTimeout 9\n  ConnectTimeout 4\n", "x"),
    "protocolkeepalives-is-serveraliveinterval": Case("Host *\n  ProtocolKeepAlives 8\n", "x"),
    "time-none-is-unset": Case("Host x\n  ConnectTimeout none\n  ServerAliveInterval none\nHost *\n"
                               "  ConnectTimeout 5\n  ServerAliveInterval 7\n", "x"),
    "connecttimeout-bad": Case("Host *\n  ConnectTimeout soon\n", "x", error="invalid time value"),
    "port-bad-even-inactive": Case("Host other\n  Port abc\n", "x", error="bad port"),
    "port-service-name": Case("Host *\n  Port ssh\n", "x"),
    # a2port()/atoi_err()/convtime() go through strtonum()/strtol(): leading blanks and a sign are accepted
    "port-sign-and-blank": Case("Host x\n  Port +2223\nHost *\n  ProxyJump a:+2201,b:+2200\n", "x"),
    "port-quoted-blank": Case("Host *\n  Port \" 2224\"\n", "x"),
    "port-trailing-blank": Case("Host *\n  Port \"22 \"\n", "x", error="bad port"),
    "numbers-strtol": Case("Host *\n  ConnectTimeout +5\n  ServerAliveInterval \"1m +5\"\n"
                           "  ServerAliveCountMax \" +4\"\n", "x"),
    "time-negative-zero": Case("Host *\n  ConnectTimeout -0\n  ServerAliveInterval -0s\n", "x"),
    "time-negative": Case("Host *\n  ServerAliveInterval 1m-5\n", "x", error="invalid time value"),
    "identityfile-accumulates": Case("Host web01\n  IdentityFile ~/.ssh/web\nHost *\n  IdentityFile {d}/k_%h\n"
                                     "  IdentityFile ~/.ssh/web\n", "web01"),
    # readconf.c's limits: 100 identity or certificate files (duplicates dropped), 32 known-hosts files per line
    "identityfile-limit": Case("Host *\n" + "".join(f"  IdentityFile /k{i}\n  IdentityFile /k{i}\n" for i in range(100))
                               + "  IdentityFile /k100\n", "x", error="too many identity files"),
    "identityfile-limit-inactive": Case("Host other\n" + "".join(f"  IdentityFile /k{i}\n" for i in range(101)), "x"),
    "certificatefile-limit": Case("Host *\n" + "".join(f"  CertificateFile /c{i}\n" for i in range(101)), "x",
                                  error="too many certificate files"),
    "knownhosts-limit": Case("Host *\n  GlobalKnownHostsFile " + " ".join(f"/g{i}" for i in range(33)) + "\n", "x",
                             error="too many globalknownhostsfile entries"),
    "knownhosts-limit-not-first": Case("Host *\n  UserKnownHostsFile /a\n  UserKnownHostsFile "
                                       + " ".join(f"/u{i}" for i in range(33)) + "\n", "x"),
    # readconf.c stops reading a Host line at a negated match: an empty pattern after it is not seen
    "host-empty-after-negated-match": Case("Host !x \"\"\n  Port 1\n", "x"),
    "host-empty-pattern": Case("Host !x \"\"\n  Port 1\n", "y", error="empty pattern"),
    # under an inactive Include, readconf.c checks only the first pattern before it stops reading the line
    "host-empty-first-inactive-include": Case("Host nope\n  Include {d}/a.conf\n", "x",
                                              files={"a.conf": "Host \"\" x\n  Port 7\n"}, error="empty pattern"),
    "host-empty-later-inactive-include": Case("Host nope\n  Include {d}/a.conf\n", "x",
                                              files={"a.conf": "Host x \"\"\n  Port 7\n"}),
    "identityfile-none": Case("Host *\n  IdentityFile none\n", "x"),
    "proxyjump-chain": Case("Host t\n  ProxyJump u@b1:2222,b2\n", "t"),
    "proxyjump-ssh-uri": Case("Host t\n  ProxyJump ssh://u@b1:2200\n", "t"),
    # misc.c parse_uri(): the user is %-decoded, the host must be a domain name (no IPv6 in ssh:// URIs)
    "proxyjump-uri-user-decoded": Case("Host t\n  ProxyJump ssh://ops%40corp+x@b1:2200\n", "t"),
    "proxyjump-uri-ipv6-refused": Case("Host t\n  ProxyJump ssh://u@[::1]:2222\n", "t", error="invalid host name"),
    "proxyjump-uri-bad-escape": Case("Host t\n  ProxyJump ssh://u%4@b\n", "t", error="bad %-escape"),
    "proxyjump-uri-bad-host-inactive": Case("Host other\n  ProxyJump a,ssh://-b\n", "t", error="invalid host name"),
    "proxyjump-address": Case("Host t\n  ProxyJump 10.0.0.1\n", "t"),
    "proxyjump-none-then-star": Case("Host bastion\n  ProxyJump none\nHost *\n  ProxyJump bastion\n", "bastion"),
    "proxyjump-star-applies": Case("Host bastion\n  ProxyJump none\nHost *\n  ProxyJump bastion\n", "web01"),
    "proxyjump-self-loop": Case("Host *\n  ProxyJump bastion\n", "bastion", error="jumphost loop"),
    # ssh.c compares the last hop as written (case and tokens kept) with the final, lower-cased host name
    "proxyjump-loop-is-case-sensitive": Case("Host *\n  ProxyJump Bastion\n", "bastion"),
    "proxyjump-loop-before-tokens": Case("Host *\n  ProxyJump %r@%h\n", "bastion"),
    "proxyjump-loop-upper-name": Case("Host *\n  ProxyJump bastion:22\n", "BASTION", error="jumphost loop"),
    "proxycommand-first-wins": Case("Host t\n  ProxyCommand nc %h %p\nHost *\n  ProxyJump b\n", "t"),
    "proxyjump-first-wins": Case("Host t\n  ProxyJump b\nHost *\n  ProxyCommand nc %h %p\n", "t"),
    "proxyjump-none-lets-proxycommand": Case("Host t\n  ProxyJump none\nHost *\n  ProxyCommand nc %h %p\n", "t"),
    "proxycommand-none-blocks-jump": Case("Host t\n  ProxyCommand none\nHost *\n  ProxyJump b\n", "t"),
    "proxycommand-k-token": Case("Host t\n  HostKeyAlias KA\n  ProxyCommand nc %k %p\nHost *\n"
                                 "  ProxyJump %k\n", "t"),
    "proxyjump-k-token": Case("Host *\n  ProxyJump gw-%k\n", "t"),
    "proxycommand-equals-comment": Case("Host t\n  ProxyCommand = ssh -W %h:%p gw # via gw\n", "t"),
    "knownhosts-tokens": Case("Host web01\n  HostName h.example\n  Port 2200\n  User bob\n"
                              "  UserKnownHostsFile ~/.ssh/kh_%h %d/kh/%u_%r_%p_%n_%i_%k_%L_%l_%%_%C\n", "web01"),
    # ssh expands these before printing ssh -G, so a bad token there is refused although fleetrun uses none
    "controlpath-tokens": Case("Host *\n  ControlPath ~/.ssh/cm-%r@%h:%p-%C\n  RemoteCommand echo %n\n"
                               "  LocalForward /tmp/%h.sock h:80\n", "web01"),
    "controlpath-bad-token": Case("Host *\n  ControlPath ~/.ssh/cm-%x\n", "web01", error="unknown token %x"),
    "controlpath-unset-variable": Case("Host *\n  ControlPath ${FLEETRUN_NOT_SET_EVER}\n", "web01",
                                       error="is not set"),
    "controlpath-bad-token-inactive": Case("Host other\n  ControlPath %x\nHost *\n  ControlPath none\n", "x"),
    "remotecommand-bad-token": Case("Host *\n  RemoteCommand echo %x\n", "x", error="unknown token %x"),
    "forward-path-bad-token": Case("Host *\n  RemoteForward /tmp/%x.sock\n", "x", error="unknown token %x"),
    "forward-host-not-expanded": Case("Host *\n  LocalForward 8080 %x:80\n", "x"),
    # readconf.c dollar_expand()s agent paths on every line: an unset ${VAR} is refused in any block
    "identityagent-unset-variable-inactive": Case("Host other\n  IdentityAgent ${FLEETRUN_NOT_SET_EVER}/a\n", "x",
                                                  error="is not set"),
    "forwardagent-unset-variable-inactive": Case("Host other\n  ForwardAgent ${FLEETRUN_NOT_SET_EVER}\n", "x",
                                                 error="is not set"),
    # ssh.c expands ForwardAgent's socket path whenever one is set, even where the flag is off
    "forwardagent-path-bad-token-after-yes": Case("Host *\n  ForwardAgent yes\n  ForwardAgent /tmp/%x\n", "x",
                                                  error="unknown token %x"),
    "forwardagent-path-bad-token-after-no": Case("Host *\n  ForwardAgent no\n  ForwardAgent /tmp/%x\n", "x",
                                                 error="unknown token %x"),
    "identityagent-digit-name": Case("Host other\n  IdentityAgent $1agent\nHost *\n  ForwardAgent $2\n", "x"),
    "knownhosts-none": Case("Host *\n  UserKnownHostsFile none\n  GlobalKnownHostsFile none\n", "x"),
    "knownhosts-none-not-alone": Case("Host *\n  UserKnownHostsFile a none\n", "x", error='"none" must appear'),
    "globalknownhosts-tilde": Case("Host *\n  GlobalKnownHostsFile ~/g1 /etc/g2\n", "x"),
    "strict-ask-default": Case("Host other\n  StrictHostKeyChecking no\n", "x"),
    "strict-off": Case("Host *\n  StrictHostKeyChecking off\n", "x"),
    "strict-accept-new": Case("Host *\n  StrictHostKeyChecking accept-new\n", "x"),
    "strict-yes": Case("Host *\n  StrictHostKeyChecking yes\n", "x"),
    "hostkeyalias-lowercased": Case("Host web01\n  HostKeyAlias Web-Alias\n", "web01"),
    # ssh lowercases with C's tolower: ASCII letters only (hÉllo), the name known_hosts is searched for
    "hostkeyalias-lowercased-ascii-only": Case("Host web01\n  HostKeyAlias HÉLLO.Example\n", "web01"),
    "hostname-lowercased-ascii-only": Case("Host web01\n  HostName WÉB.Example\n", "web01"),
    "match-host-lowercased-ascii-only": Case("Match host wÉb.example\n  Port 7\n", "WÉB.Example"),
    "match-host": Case("Host web01\n  HostName 10.0.0.7\nMatch host 10.0.0.*\n  Port 2201\n", "web01"),
    "match-host-case-insensitive": Case("Match host WEB01\n  Port 7\n", "web01"),
    "match-originalhost": Case("Host web01\n  HostName 10.0.0.7\nMatch originalhost web01\n  User o\n", "web01"),
    "match-user-given": Case("Match user deploy\n  Port 2202\n", "web01", user="deploy"),
    "match-user-from-config": Case("Host web01\n  User app\nMatch user app\n  Port 2203\n", "web01"),
    "match-localuser": Case(f"Match localuser {local_info().user}\n  Port 2204\n", "x"),
    "match-negated": Case(f"Match !localuser {local_info().user}\n  Port 1\nMatch all\n  Port 2205\n", "x"),
    "match-exec-true-token": Case("Match exec \"test %h = web01 && test %n = web01\"\n  Port 2206\n", "web01"),
    "match-exec-false-negated": Case("Match exec false\n  Port 1\nMatch !exec false\n  Port 2207\n", "x"),
    "match-exec-skipped-after-failure": Case("Match host nope exec \"exit 1\"\n  Port 1\n", "x"),
    # readconf.c expands the command before it skips it, in any block, so a bad token is always refused
    "match-exec-bad-token-skipped": Case("Match host y exec \"%x\"\n  Port 7\n", "x", error="unknown token %x"),
    "match-exec-bad-token-inactive-include": Case("Host nope\n  Include {d}/m.conf\n", "x",
                                                  files={"m.conf": "Match host y exec \"%x\"\n  Port 7\n"},
                                                  error="unknown token %x"),
    "match-all-after-one": Case("Match host x all\n  Port 2208\n", "x"),
    "match-all-combined": Case("Match all host x\n  Port 1\n", "x", error="cannot be combined"),
    "match-final-second-pass": Case("Host web01\n  HostName 10.9.9.9\nMatch final host 10.9.9.9\n  Port 2209\n"
                                    "Host 10.9.9.9\n  User final\n", "web01"),
    "match-final-identities": Case("Host web01\n  HostName h1\nMatch final\n  HostName h2\n  IdentityFile /a\n"
                                   "Host *\n  IdentityFile /b\n", "web01"),
    "match-not-final": Case("Match !final\n  Port 2210\nMatch final\n  Port 1\n  User z\n", "x"),
    "match-canonical": Case("Match canonical\n  Port 2211\nHost x\n  CanonicalizeHostname yes\n", "x"),
    "match-localnetwork": Case("Match localnetwork 10.0.0.0/8\n  Port 1\n", "x", error="localnetwork"),
    "match-missing-argument": Case("Match host\n  Port 1\n", "x", error="missing argument"),
    "unknown-option": Case("Host *\n  Portt 22\n", "x", error="unknown option"),
    "ignoreunknown": Case("IgnoreUnknown Bog*,UseKeychain\nHost *\n  UseKeychain yes\n  Port 2212\n", "x"),
    "no-argument": Case("Host *\n  User\n", "x", error="no argument"),
    "unbalanced-quote": Case("Host *\n  User \"ops\n", "x", error="quote"),
    "extra-argument": Case("Host *\n  Port 22 23\n", "x", error="extra arguments"),
    # Options fleetrun does not apply are still checked as readconf.c checks them, in inactive blocks too
    "algorithms-modifiers": Case("Host *\n  Ciphers +aes128-cbc\n  MACs ^hmac-sha2-512,hmac-md5\n"
                                 "  KexAlgorithms -nope*\n  HostKeyAlgorithms +ssh-rsa*,RSA\n"
                                 "  PubkeyAcceptedAlgorithms ssh-ed25519,,nope\n  KexAlgorithms gss-gex-sha1-x\n",
                                 "x"),
    "ciphers-bad-inactive": Case("Host other\n  Ciphers aes128-ctr,nope\n", "x", error="bad cipher spec"),
    "macs-bad": Case("Host *\n  MACs +nope\n", "x", error="bad MAC spec"),
    "kex-bad": Case("Host *\n  KexAlgorithms ^curve25519-sha256,nope\n", "x", error="bad key exchange"),
    "hostkeyalgorithms-bad": Case("Host *\n  HostKeyAlgorithms nope*\n", "x", error="bad key types"),
    # checked again once the files are read, for the value in effect only (ssh.c expands the list)
    "hostkeyalgorithms-negated": Case("Host other\n  HostKeyAlgorithms !ssh-dss\nHost *\n"
                                      "  HostKeyAlgorithms ssh-ed25519,!ssh-dss\n", "x", error="negated"),
    "hostkeyalgorithms-short-name": Case("Host *\n  HostKeyAlgorithms RSA\n", "x", error="matches no algorithm"),
    "hostkeyalgorithms-inactive-negated": Case("Host other\n  HostKeyAlgorithms !ssh-dss\n", "x"),
    "ciphers-two-arguments": Case("Host *\n  Ciphers aes128-ctr aes256-ctr\n", "x", error="extra arguments"),
    "others-accepted": Case("Host *\n  LogLevel debug3\n  SyslogFacility LOCAL7\n  EscapeChar ^A\n"
                            "  ControlPersist 10m\n  AddKeysToAgent confirm 5m\n  TunnelDevice any:1\n"
                            "  StreamLocalBindMask 0177\n  IPQoS af21 0x10\n  RekeyLimit 1G 1h\n"
                            "  CanonicalDomains a.example\n"
                            "  PermitRemoteOpen h:* [::1]:22\n  FingerprintHash MD5\n  SendEnv LC_* -LANG\n"
                            "  SetEnv A=b\n  LogVerbose kex.c:*\n", "x"),
    "sendenv-removals-and-setenv-first-wins": Case(
        "Host x\n  SendEnv LC_* LANG A?\n  SendEnv -LANG B\n  SetEnv A=1 \"B=x y\" A=2\nHost *\n  SetEnv C=3\n"
        "  SendEnv -B* LANG\n  SendEnv -L?_*\n", "x"),
    "forwards-accepted": Case("Host other\n  LocalForward 8080 localhost:80\n  LocalForward /tmp/s h:80\n"
                              "  LocalForward [::1]:8080 [::1]:80\n  RemoteForward 0\n  RemoteForward 8022 /tmp/t\n"
                              "  DynamicForward [::1]:1080\n  CanonicalizePermittedCNAMEs *.a:*.b\n", "x"),
    "localforward-missing-target": Case("Host other\n  LocalForward 8080\n", "x", error="missing target"),
    "dynamicforward-bad": Case("Host *\n  DynamicForward a:b:c\n", "x", error="bad forwarding specification"),
    "localforward-port-zero": Case("Host *\n  LocalForward 0 h:80\n", "x", error="bad forwarding specification"),
    "sendenv-bad": Case("Host *\n  SendEnv LANG A=B\n", "x", error="invalid environment name"),
    "setenv-bad": Case("Host *\n  SetEnv A=b NAME\n", "x", error="invalid SetEnv"),
    "loglevel-bad": Case("Host *\n  LogLevel DEBUG4\n", "x", error="unsupported log level"),
    "escapechar-bad": Case("Host *\n  EscapeChar ab\n", "x", error="bad escape character"),
    "rekeylimit-too-small": Case("Host *\n  RekeyLimit 15\n", "x", error="too small"),
    "ipqos-bad": Case("Host *\n  IPQoS 256\n", "x", error="bad IPQoS value"),
    "canonicaldomains-bad": Case("Host *\n  CanonicalDomains a..example\n", "x", error="bad domain name"),
    "permitremoteopen-bad": Case("Host *\n  PermitRemoteOpen h:0\n", "x", error="bad port number"),
    "addkeystoagent-bad": Case("Host *\n  AddKeysToAgent ask 5m\n", "x", error="unsupported option"),
    # Debian's GSSAPI key exchange options are checked by its readconf.c like the others
    "gssapi-options-accepted": Case("Host other\n  GSSAPIKeyExchange yes\n  GSSAPITrustDNS TRUE\n"
                                    "  GSSAPIKexAlgorithms gss-gex-sha1-,gss-curve25519-sha256-\n"
                                    "  GSSAPIClientIdentity me@REALM\n", "x"),
    "gssapi-flag-bad": Case("Host other\n  GSSAPIRenewalForcesRekey maybe\n", "x", error="unsupported value"),
    "gssapi-identity-two": Case("Host other\n  GSSAPIServerIdentity a b\n", "x", error="extra arguments"),
    "gssapi-kexalgorithms-bad": Case("Host other\n  GSSAPIKexAlgorithms +gss-gex-sha1-\n", "x",
                                     error="bad GSSAPI key exchange"),
    # ssh.c's checks once the options are filled in, for the values in effect
    "connectionattempts-zero": Case("Host *\n  ConnectionAttempts 0\n", "x", error="must be at least 1"),
    "connectionattempts-zero-inactive": Case("Host other\n  ConnectionAttempts 0\n", "x"),
    "proxycommand-stdio-fdpass": Case("Host *\n  ProxyCommand -\n  ProxyUseFdpass yes\n", "x",
                                      error="incompatible"),
    "preset-user-port-win": Case("Host web01\n  User cfg\n  Port 1\n", "web01", user="cli", port=2213),
    "include-absolute": Case("Include {d}/conf.d/*.conf\nHost *\n  Port 1\n", "web01",
                             files={"conf.d/b.conf": "Host web01\n  Port 2214\n",
                                    "conf.d/a.conf": "Host web01\n  User from_a\n",
                                    "conf.d/c.txt": "Host *\n  User never\n"}),
    "include-glob-lexical-order": Case("Include {d}/inc/*\n", "x",
                                       files={"inc/20-b": "Port 2215\n", "inc/10-a": "Port 2216\n"}),
    "include-nested": Case("Include {d}/one.conf\n", "x",
                           files={"one.conf": "Include {d}/two.conf\n", "two.conf": "Port 2217\n"}),
    "include-inside-host": Case("Host web01\n  Include {d}/web.conf\nHost *\n  Port 1\n", "web01",
                                files={"web.conf": "Port 2218\nUser w\n"}),
    "include-inside-inactive-host": Case("Host other\n  Include {d}/web.conf\n", "web01",
                                         files={"web.conf": "Port 2219\nHost *\n  User w\n"}),
    "include-match-does-not-leak": Case("Host web01\n  Include {d}/m.conf\n  Port 2220\n", "web01",
                                        files={"m.conf": "Match host nope\n  User n\n"}),
    "include-loop": Case("Include {d}/a.conf\n", "x", files={"a.conf": "Include {d}/b.conf\n",
                                                             "b.conf": "Port 2\nInclude {d}/a.conf\n"},
                         error="Include loop"),  # ssh: "Too many recursive configuration includes"
    "include-error-in-inactive-file": Case("Host other\n  Include {d}/bad.conf\n", "web01",
                                           files={"bad.conf": "Port nope\n"}, error="bad port"),
    # Include's ~ (and relative paths, which become ~/.ssh/...) follow $HOME, as glob(3)'s GLOB_TILDE does:
    # both tools get the same fake HOME here, so nothing is written to the real ~/.ssh.
    "include-relative-to-home-ssh": Case("Include conf.d/*.conf\n", "web01", fake_home=True,
                                         files={"home/.ssh/conf.d/web.conf": "Host web01\n  Port 2221\n"}),
    "include-tilde": Case("Include ~/.ssh/extra\n", "web01", fake_home=True,
                          files={"home/.ssh/extra": "Port 2222\n"}),
}


def _ssh_g(config: Path, case: Case, env: dict[str, str]) -> tuple[dict[str, list[str]] | None, str]:
    argv = [str(SSH), "-G", "-F", str(config)]
    argv += ["-l", case.user] if case.user else []
    argv += ["-p", str(case.port)] if case.port else []
    done = subprocess.run([*argv, case.host], capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL,
                          timeout=30)
    if done.returncode != 0:
        return None, done.stderr
    printed: dict[str, list[str]] = {}
    for line in done.stdout.splitlines():
        key, _, value = line.partition(" ")
        printed.setdefault(key, []).append(value)
    return printed, done.stderr


def _hops(text: str) -> str:
    return ",".join(format_hop(*parse_hop(hop.replace("[", "").replace("]", "")
                                          if ":" not in hop.strip("[]") else hop)) for hop in text.split(",") if hop)


def _theirs(printed: dict[str, list[str]]) -> dict[str, object]:
    home = local_info().home

    def one(key: str) -> str | None:
        return printed.get(key, [None])[0]

    jump = one("proxyjump")
    global_files = one("globalknownhostsfile") or ""
    return {
        "hostname": one("hostname"), "port": one("port"), "user": one("user"),
        "identityfile": [name for name in printed.get("identityfile", []) if name.lower() != "none"],
        # ssh -G spells the last hop its own way (ssh:// URIs undone, numeric hosts in brackets)
        "proxyjump": None if jump in (None, "none") else _hops(jump),
        "proxycommand": one("proxycommand"),
        "userknownhostsfile": one("userknownhostsfile"),
        # ssh -G prints GlobalKnownHostsFile before its ~ is expanded (ssh expands it when reading the files)
        "globalknownhostsfile": " ".join(tilde_expand(name, home) for name in global_files.split())
        if global_files != "none" else "none",
        "stricthostkeychecking": one("stricthostkeychecking"),
        "connecttimeout": None if one("connecttimeout") in ("none", "0") else one("connecttimeout"),
        "hostkeyalias": one("hostkeyalias"),
        "certificatefile": [name for name in printed.get("certificatefile", []) if name.lower() != "none"],
        "identitiesonly": one("identitiesonly"),
        "serveraliveinterval": one("serveraliveinterval"),
        "serveralivecountmax": one("serveralivecountmax"),
        "hashknownhosts": one("hashknownhosts"),
        "controlpath": one("controlpath"),
        "sendenv": printed.get("sendenv", []),
        "setenv": printed.get("setenv", []),
    }


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def _ours(config: Path, case: Case) -> dict[str, object]:
    settings = load(SshConfigSource(path=str(config))).resolve(case.host, Preset(user=case.user, port=case.port))
    strict = {"yes": "true", "off": "false"}.get(settings.strict_host_key_checking,
                                                 settings.strict_host_key_checking)
    return {
        "hostname": settings.hostname, "port": str(settings.port), "user": settings.user,
        "identityfile": [identity.written for identity in settings.identity_files],
        "proxyjump": _hops(",".join(settings.proxy_jump_written)) or None,
        "proxycommand": settings.proxy_command_written,
        "userknownhostsfile": " ".join(settings.user_known_hosts) or "none",
        "globalknownhostsfile": " ".join(settings.global_known_hosts) or "none",
        "stricthostkeychecking": strict,
        "connecttimeout": None if settings.connect_timeout is None else str(int(settings.connect_timeout)),
        "hostkeyalias": settings.host_key_alias,
        "certificatefile": [certificate.written for certificate in settings.certificate_files],
        "identitiesonly": _yes_no(settings.identities_only),
        "serveraliveinterval": str(settings.server_alive_interval),
        "serveralivecountmax": str(settings.server_alive_count_max),
        "hashknownhosts": _yes_no(settings.hash_known_hosts),
        "controlpath": settings.control_path,
        "sendenv": list(settings.send_env),
        "setenv": list(settings.set_env),
    }


def test_the_corpus_is_big_enough() -> None:
    assert len(CASES) >= 30
    assert sum(case.error is None for case in CASES.values()) >= 30


@pytest.mark.parametrize("name", list(CASES))
def test_resolution_matches_ssh_G(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    case = CASES[name]
    for relative, text in case.files.items():
        target = tmp_path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text.replace("{d}", str(tmp_path)))
    config = tmp_path / "ssh_config"
    config.write_text(case.config.replace("{d}", str(tmp_path)))
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    if case.fake_home:
        env["HOME"] = str(tmp_path / "home")
        monkeypatch.setenv("HOME", env["HOME"])
    printed, stderr = _ssh_g(config, case, env)
    if case.error is not None:
        assert printed is None, f"ssh accepted what the case expects refused: {case.config!r}"
        with pytest.raises(ConfigError) as refused:
            _ours(config, case)
        assert case.error in str(refused.value)
        assert str(refused.value).startswith(str(config).replace(str(Path.home()), "~")) or \
            str(refused.value).startswith(str(tmp_path))
        assert ":" in str(refused.value).split(" ", 1)[0], "the message names file:line"
        return
    assert printed is not None, f"ssh refused the snippet: {stderr.strip()}"
    theirs, ours = _theirs(printed), _ours(config, case)
    assert ours == theirs, {key: (ours[key], theirs[key]) for key in FIELDS if ours[key] != theirs[key]}


# readconf.c keeps ForwardAgent's flag and its socket path apart, first value each; ssh -G prints the path
# when one is set, but ssh.c forwards only when the flag is on (`no` first: nothing is forwarded).
FORWARD_AGENT = {
    "yes-then-path": ("Host *\n  ForwardAgent yes\nHost *\n  ForwardAgent /tmp/sock\n", True),
    "path-then-yes": ("Host *\n  ForwardAgent /tmp/a\n  ForwardAgent yes\n", True),
    "path-then-path": ("Host *\n  ForwardAgent /tmp/a\nHost x\n  ForwardAgent /tmp/b\n", True),
    "path-inactive-then-yes": ("Host other\n  ForwardAgent /tmp/a\nHost *\n  ForwardAgent yes\n", True),
    "no-then-path": ("Host *\n  ForwardAgent no\n  ForwardAgent /tmp/sock\n", False),
}


@pytest.mark.parametrize("name", list(FORWARD_AGENT))
def test_forward_agent_matches_ssh_G(name: str, tmp_path: Path) -> None:
    text, flag_on = FORWARD_AGENT[name]
    config = tmp_path / "ssh_config"
    config.write_text(text)
    printed, stderr = _ssh_g(config, Case(text, "x"), {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"})
    assert printed is not None, stderr
    theirs = printed["forwardagent"][0]
    expected: bool | str = (theirs == "yes" if theirs in ("yes", "no") else theirs) if flag_on else False
    assert load(SshConfigSource(path=str(config))).resolve("x").forward_agent == expected


@dataclass(frozen=True)
class Groups:
    own: int  # root's own primary group, with no one else in it (a Debian user's per-user group)
    listed: int  # a group whose only member is root, as a listed member
    shared: int  # a group that is another account's primary group
    empty: int  # a group with no member at all (as setgid programs use)


@pytest.fixture(scope="module")
def groups() -> Iterator[Groups]:
    """Throwaway groups (and one account) made for these cases, so they depend on no group of the machine's."""
    if os.geteuid() != 0:
        # Justified: only root can make groups and give a file to them; CI runs as root.
        pytest.skip("needs root: the cases make throwaway groups and chown files to them (CI runs as root)")
    tag = os.getpid() % 100000
    names = {kind: f"frt-{kind}{tag}" for kind in ("listed", "shared", "empty")}
    account = f"frt-member{tag}"
    made: list[list[str]] = []
    try:
        for kind, group in names.items():
            subprocess.run(["groupadd", *(["-U", "root"] if kind == "listed" else []), group], check=True,
                           capture_output=True)
            made.append(["groupdel", group])
        subprocess.run(["useradd", "-M", "-N", "-g", names["shared"], "-s", "/usr/sbin/nologin", account],
                       check=True, capture_output=True)
        made.insert(0, ["userdel", account])
        own = pwd.getpwuid(0).pw_gid
        if grp.getgrgid(own).gr_mem not in ([], ["root"]) or any(
                entry.pw_gid == own and entry.pw_uid != 0 for entry in pwd.getpwall()):
            pytest.fail(f"group {own} (root's own) has other members here: the 'own' cases cannot be judged")
        yield Groups(own, *(grp.getgrnam(names[kind]).gr_gid for kind in ("listed", "shared", "empty")))
    finally:
        for command in made:
            subprocess.run(command, capture_output=True)


# Debian's user-group-modes patch: a group-writable file is accepted when its group holds only us
PERMISSIONS = {"own-group-664": (0o664, "own"), "own-group-666": (0o666, "own"),
               "own-group-646": (0o646, "own"), "listed-only-664": (0o664, "listed"),
               "shared-group-664": (0o664, "shared"), "empty-group-664": (0o664, "empty"),
               "shared-group-644": (0o644, "shared")}


@pytest.mark.parametrize("name", list(PERMISSIONS))
def test_include_permissions_match_ssh_G(name: str, tmp_path: Path, groups: Groups) -> None:
    mode, kind = PERMISSIONS[name]
    included = tmp_path / "inc.conf"
    included.write_text("Port 2234\n")
    os.chown(included, os.getuid(), getattr(groups, kind))
    included.chmod(mode)
    config = tmp_path / "ssh_config"
    config.write_text(f"Include {included}\n")
    printed, stderr = _ssh_g(config, Case("", "x"), dict(os.environ))
    if printed is None:
        assert "Bad owner or permissions" in stderr
        with pytest.raises(ConfigError, match="bad owner or permissions"):
            _ours(config, Case("", "x"))
    else:
        assert printed["port"] == ["2234"]
        assert _ours(config, Case("", "x"))["port"] == "2234"
    # Each kind of group is judged as ssh judges it: accepted are the group-writable file of root's own group
    # and of a group listing only root, and any file not group-writable; refused the rest.
    assert (printed is not None) == (mode & 0o002 == 0 and (kind in ("own", "listed") or mode & 0o020 == 0))


# ssh refuses a destination or -l user with shell metacharacters (%h and %r reach ProxyCommand's shell)
NAMES = [("a;b", None), ("-x", None), ("a$b", None), ("a b", None), ("a,b", None), ("a\x01b", None), ("a`b", None),
         ("a%b", None), ("a!b", None), ("a*b", None), ("ü", None), ("x", "a;b"), ("x", "-x"), ("x", "a -b"),
         ("x", "a\\"), ("x", "a\x01b"), ("x", "a b"), ("x", "a$b"), ("x", "a\\b")]


@pytest.mark.parametrize(("host", "user"), NAMES)
def test_destination_and_user_checks_match_ssh(host: str, user: str | None) -> None:
    argv = [str(SSH), "-G", "-F", "/dev/null", *(["-l", user] if user is not None else []), "--", host]
    accepted = subprocess.run(argv, capture_output=True, stdin=subprocess.DEVNULL, timeout=30).returncode == 0
    config = load(SshConfigSource(disabled=True))
    if accepted:
        config.resolve(host, Preset(user=user))
    else:
        with pytest.raises(UsageError, match="invalid characters"):
            config.resolve(host, Preset(user=user))
