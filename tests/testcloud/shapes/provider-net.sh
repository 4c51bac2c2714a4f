#!/bin/bash
# Issue 30: a provider network on the test cloud, as a site hands one out: shared with every
# project, not external, no router, no floating IPs, no DHCP and so no metadata service (Neutron
# serves 169.254.169.254 only through a router or a DHCP port). A server on it gets its address
# and its user-data from the config drive (network_data.json, user_data); the host reaches it
# through a veth pair whose far end is the physical network's interface (the agent puts it in
# the network's bridge), as a campus network reaches a site's provider network.
#
# Not bridge_mappings: with Neutron Zed's linuxbridge driver Nova plugs a server into brq<net>
# whatever the mapping (no bridge_name in the binding's vif_details), so a mapped bridge never
# sees the server; physical_interface_mappings is how that driver joins a flat network to a wire.
#
# Adds to what ../shared/testcloud/up.sh brings up (run that first), as root; idempotent.
# Usage: provider-net.sh [up|down]   (down removes the network, if no port is left on it)
set -euo pipefail
STATE=${TESTCLOUD_STATE:-/var/tmp/testcloud}
HOST_END=prov0  # the host's side, with the gateway's address
WIRE=prov1      # the provider network's "physical" interface
CIDR=172.25.0.0/24
GATEWAY=172.25.0.1
export OS_CLIENT_CONFIG_FILE=$STATE/clouds.yaml OS_CLOUD=testcloud-admin
ML2=/etc/neutron/plugins/ml2/ml2_conf.ini
AGENT=/etc/neutron/plugins/ml2/linuxbridge_agent.ini
OS=/usr/bin/openstack

wait_neutron() {
  for _ in $(seq 120); do curl -fs -o /dev/null http://127.0.0.1:9696/ && return; sleep 1; done
  echo "provider-net: neutron-api did not come back" >&2; exit 1
}

wait_agent() {  # the linux bridge agent reports alive with the new mapping
  for _ in $(seq 60); do
    $OS network agent list --agent-type linux-bridge -f value -c Alive 2>/dev/null | grep -q True && return
    sleep 2
  done
  echo "provider-net: the linux bridge agent is not alive" >&2; exit 1
}

if [ "${1:-up}" = down ]; then
  $OS subnet delete provider-subnet 2>/dev/null || true
  $OS network delete provider 2>/dev/null || true
  exit 0
fi

ip link show $HOST_END >/dev/null 2>&1 || ip link add $HOST_END type veth peer name $WIRE
ip addr replace $GATEWAY/24 dev $HOST_END
ip link set $HOST_END up
ip link set $WIRE up

changed=
case "$(crudini --get $ML2 ml2_type_flat flat_networks)" in
  *provider*) ;;
  *) crudini --set $ML2 ml2_type_flat flat_networks public,provider; changed=1 ;;
esac
if [ "$(crudini --get $AGENT linux_bridge bridge_mappings)" != public:br-ex ]; then
  crudini --set $AGENT linux_bridge bridge_mappings public:br-ex; changed=1
fi
case "$(crudini --get $AGENT linux_bridge physical_interface_mappings 2>/dev/null)" in
  "provider:$WIRE") ;;
  *) crudini --set $AGENT linux_bridge physical_interface_mappings provider:$WIRE; changed=1 ;;
esac
if [ -n "$changed" ]; then
  for s in neutron-api neutron-rpc-server neutron-linuxbridge-agent; do /etc/init.d/$s restart >/dev/null; done
  wait_neutron
  sleep 5
fi
wait_agent

$OS network show provider >/dev/null 2>&1 || $OS network create --share --provider-network-type flat \
  --provider-physical-network provider provider >/dev/null
$OS subnet show provider-subnet >/dev/null 2>&1 || $OS subnet create --network provider \
  --subnet-range $CIDR --gateway $GATEWAY --allocation-pool start=172.25.0.10,end=172.25.0.200 \
  --no-dhcp provider-subnet >/dev/null
echo "provider-net: network provider ($CIDR, no DHCP, no router), the host on $HOST_END ($GATEWAY)"
