#!/bin/bash
# Add a real Cinder (block storage) to testcloud (/work/shared/testcloud, run its up.sh first), so that
# flavors with disk 0 can boot from a volume. Needs root. Idempotent: re-running starts what is down and
# re-checks the resources, it never re-creates what exists.
#
# Backend: Ceph RBD. This machine's kernel has no device-mapper / iSCSI / NFS / nbd, so Cinder's LVM and
# NFS drivers cannot work. RBD needs no kernel: cinder-volume talks to Ceph through librados/librbd, and
# nova/libvirt gives the volume to qemu as a *network* disk (<disk type='network'><source protocol='rbd'>),
# opened by qemu's librbd (qemu-block-extra).
#   ceph:   one mon (a, v2 127.0.0.1:3300 + v1 127.0.0.1:6789) and one BlueStore OSD on a sparse file
#           ($CEPH_OSD_SIZE, default 40G, /var/lib/ceph/osd/ceph-0/block); cephx off (auth none), pool size 1,
#           pool "volumes" (rbd). No ceph-mgr: not needed for RBD I/O (see the note at ceph_pool).
#   cinder: cinder-api (uwsgi, :8776), cinder-scheduler, cinder-volume with backend "ceph" (RBDDriver),
#           volume type "ceph" (the default), keystone service volumev3.
#   nova:   [cinder] credentials; nova-api and nova-compute restarted only when nova.conf changed (so
#           only on the first run). Nova's wait for a volume made from an image stays its default
#           (block_device_allocate_retries: 60 x 3 s), as on a real cloud.
#   fixtures: demo's volume quota (10 volumes, 200 GB), flavor m1.volonly (2048 MB, 2 vCPU, disk 0).
# Daemons: no systemd here; ceph daemons are started directly, cinder through /etc/init.d (like restart.sh).
# Logs: /var/log/ceph/ceph-{mon.a,osd.0}.log, /var/log/cinder/cinder-{api,scheduler,volume}.log.
set -euo pipefail
export TESTCLOUD_STATE=${TESTCLOUD_STATE:-/var/tmp/testcloud}
CEPH_OSD_SIZE=${CEPH_OSD_SIZE:-40G}
MON=a
MON_DIR=/var/lib/ceph/mon/ceph-$MON
OSD_DIR=/var/lib/ceph/osd/ceph-0
OS_PY=/usr/bin/python3          # Debian's python3 has openstacksdk (python3-openstackclient's dependency)
export DEBIAN_FRONTEND=noninteractive
export OS_CLIENT_CONFIG_FILE=$TESTCLOUD_STATE/clouds.yaml  # the heredocs connect as testcloud-admin
declare -A T
phase() { local name=$1 t0; shift; t0=$(date +%s); echo "=== cinder: $name ($(date +%T))"; "$@"; T[$name]=$(( $(date +%s) - t0 )); }
wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
  local n=$1 what=$2; shift 2
  for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  echo "cinder.sh: timed out after ${n}s waiting for $what" >&2; return 1
}

# ---------------------------------------------------------------- install
PKGS="ceph-mon ceph-osd ceph-common python3-rados python3-rbd cinder-api cinder-scheduler cinder-volume crudini"
install_pkgs() {
  local missing="" p
  for p in $PKGS; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing="$missing $p"
  done
  if [ -z "$missing" ]; then echo "packages present"; return 0; fi
  # Same approach as testcloud's 00-install.sh (noninteractive, keep our config files), plus explicit answers:
  # never let openstack-pkg-tools configure a db / rabbit / keystone / endpoint (we do that below).
  debconf-set-selections <<'EOF'
cinder-common cinder/configure_db boolean false
cinder-common cinder/configure_rabbit boolean false
cinder-common cinder/configure_ksat boolean false
cinder-api cinder/configure_api-endpoint boolean false
EOF
  # postinsts call invoke-rc.d: on this machine policy-rc.d already denies it; make sure that holds elsewhere
  # too (the package scripts would start cinder/tgtd with their default LVM config).
  local own_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; own_policy=1
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get update -q
  # shellcheck disable=SC2086
  apt-get install -y -q --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold $missing
  [ -z "$own_policy" ] || rm -f /usr/sbin/policy-rc.d
}

# ---------------------------------------------------------------- ceph
# pid file $1 names a live process called $2 (after a machine restart a stale pid may be someone else's)
pid_alive() { local p; p=$(cat "$1" 2>/dev/null) && [ "$(cat /proc/"$p"/comm 2>/dev/null)" = "$2" ]; }
ceph_conf() {
  local fsid
  mkdir -p /etc/ceph /var/log/ceph /run/ceph /var/lib/ceph/mon /var/lib/ceph/osd
  if [ -f /etc/ceph/ceph.conf ] && fsid=$(crudini --get /etc/ceph/ceph.conf global fsid 2>/dev/null); then :; else
    fsid=$(cat /proc/sys/kernel/random/uuid)
  fi
  cat > /etc/ceph/ceph.conf.new <<EOF
# written by bakery tests/testcloud/shapes/cinder.sh: single-node test cluster, no redundancy, no auth
[global]
fsid = $fsid
mon_initial_members = $MON
mon_host = [v2:127.0.0.1:3300,v1:127.0.0.1:6789]
public_network = 127.0.0.0/8
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 32
osd_pool_default_pgp_num = 32
osd_pool_default_pg_autoscale_mode = off
osd_crush_chooseleaf_type = 0
mon_allow_pool_size_one = true
mon_allow_pool_delete = true
mon_warn_on_pool_no_redundancy = false
mon_warn_on_insecure_global_id_reclaim_allowed = false
# the test host's disk may well be >70% full: only a warning, but keep "ceph -s" readable
mon_data_avail_warn = 5
pid_file = /run/ceph/\$cluster-\$name.pid
log_file = /var/log/ceph/\$cluster-\$name.log
admin_socket = /run/ceph/\$cluster-\$name.\$pid.asok
[client]
# qemu (user libvirt-qemu) and cinder-volume (user cinder) must not need a writable log/asok
log_file = /dev/null
admin_socket =
rbd_cache = true
[mon]
mon_data = /var/lib/ceph/mon/\$cluster-\$id
[osd]
osd_data = /var/lib/ceph/osd/\$cluster-\$id
osd_objectstore = bluestore
bluestore_block_create = true
bluestore_block_size = $CEPH_OSD_SIZE
bluestore_block_db_create = false
bluestore_block_wal_create = false
# 2 cores, other VMs on the host: keep the OSD small (BlueStore autotunes its caches to stay within this)
osd_memory_target = 1073741824
osd_op_num_shards = 2
osd_op_num_threads_per_shard = 1
EOF
  if cmp -s /etc/ceph/ceph.conf.new /etc/ceph/ceph.conf; then rm /etc/ceph/ceph.conf.new; else
    mv /etc/ceph/ceph.conf.new /etc/ceph/ceph.conf
    # a changed config (a newer version of this script): restart running daemons, OSD first
    local d
    for d in osd.0 mon.$MON; do
      if pid_alive "/run/ceph/ceph-$d.pid" "ceph-${d%%.*}"; then
        local pid; pid=$(cat "/run/ceph/ceph-$d.pid")
        kill "$pid"
        wait_for 60 "ceph-$d to stop" sh -c "! kill -0 $pid"
      fi
    done
  fi
  chmod 644 /etc/ceph/ceph.conf
}
ceph_mon() {
  if [ ! -f "$MON_DIR/done" ]; then
    rm -rf "$MON_DIR"; mkdir -p "$MON_DIR"
    monmaptool --create --clobber --fsid "$(crudini --get /etc/ceph/ceph.conf global fsid)" \
      --addv $MON '[v2:127.0.0.1:3300,v1:127.0.0.1:6789]' /run/ceph/monmap
    ceph-mon --mkfs -i $MON --monmap /run/ceph/monmap
    touch "$MON_DIR/done"
  fi
  pid_alive /run/ceph/ceph-mon.$MON.pid ceph-mon || ceph-mon -i $MON
  wait_for 60 "ceph-mon" timeout 5 ceph -s
}
ceph_osd() {
  if [ ! -f "$OSD_DIR/done" ]; then
    local uuid id
    uuid=$(cat /proc/sys/kernel/random/uuid)
    # a half-made osd.0 from an interrupted run: forget it (nothing can be on it yet)
    if ceph osd ls | grep -qx 0; then ceph osd purge 0 --yes-i-really-mean-it; fi
    rm -rf "$OSD_DIR"; mkdir -p "$OSD_DIR"
    id=$(ceph osd new "$uuid")
    [ "$id" = 0 ] || { echo "expected osd id 0, got $id" >&2; return 1; }
    ceph-osd -i 0 --mkfs --osd-uuid "$uuid"
    touch "$OSD_DIR/done"
  fi
  pid_alive /run/ceph/ceph-osd.0.pid ceph-osd || ceph-osd -i 0
  wait_for 120 "osd.0 up" sh -c 'ceph osd dump -f json | grep -q "\"osd\":0,[^}]*\"up\":1"'
}
# Without a ceph-mgr, PG/pool statistics are never aggregated: "ceph df" lists no pools, "ceph osd pool
# get-quota" answers ENOENT (no stats), and mgr commands ("ceph osd pool stats", "ceph pg ...") hang. I/O is
# unaffected. Cinder's RBD driver then reports its capacity as "unknown", which the scheduler accepts
# (so nothing stops volumes from over-filling the $CEPH_OSD_SIZE file: fine for tests).
ceph_pool() {
  ceph osd pool ls | grep -qx volumes || ceph osd pool create volumes 32 32 replicated
  ceph osd pool set volumes size 1 --yes-i-really-mean-it >/dev/null
  ceph osd pool set volumes min_size 1 >/dev/null
  ceph osd pool application get volumes 2>/dev/null | grep -q rbd || rbd pool init volumes
  # I/O check through librbd: a 1 MB image, written and removed (the pool's PGs are active once this works)
  timeout 60 rbd -p volumes create --size 1 upsh-probe
  timeout 60 rbd -p volumes rm upsh-probe >/dev/null 2>&1
}
ceph_all() { ceph_conf; ceph_mon; ceph_osd; ceph_pool; ceph -s; }

# ---------------------------------------------------------------- cinder
cinder_conf() {
  local C=/etc/cinder/cinder.conf
  s() { crudini --set $C "$@"; }
  s DEFAULT transport_url rabbit://openstack:secret@127.0.0.1:5672/
  s DEFAULT auth_strategy keystone
  s DEFAULT my_ip 127.0.0.1
  s DEFAULT state_path /var/lib/cinder
  s DEFAULT glance_api_servers http://127.0.0.1:9292
  s DEFAULT enabled_backends ceph
  s DEFAULT default_volume_type ceph
  s DEFAULT osapi_volume_workers 1
  s DEFAULT image_conversion_dir /var/lib/cinder/conversion
  s database connection mysql+pymysql://os:secret@127.0.0.1/cinder
  s keystone_authtoken www_authenticate_uri http://127.0.0.1:5000
  s keystone_authtoken auth_url http://127.0.0.1:5000
  s keystone_authtoken auth_type password
  s keystone_authtoken project_domain_name Default
  s keystone_authtoken user_domain_name Default
  s keystone_authtoken project_name service
  s keystone_authtoken username cinder
  s keystone_authtoken password secret
  s keystone_authtoken region_name RegionOne
  for sec in nova service_user; do
    s $sec auth_type password
    s $sec auth_url http://127.0.0.1:5000/v3
    s $sec project_domain_name Default
    s $sec user_domain_name Default
    s $sec project_name service
    s $sec username cinder
    s $sec password secret
  done
  s nova region_name RegionOne
  s nova interface public
  s oslo_concurrency lock_path /var/lib/cinder/tmp
  crudini --del $C lvm 2>/dev/null || true
  s ceph volume_driver cinder.volume.drivers.rbd.RBDDriver
  s ceph volume_backend_name ceph
  s ceph rbd_pool volumes
  s ceph rbd_ceph_conf /etc/ceph/ceph.conf
  s ceph rbd_flatten_volume_from_snapshot false
  s ceph rbd_max_clone_depth 5
  # rbd_user unset: cephx is off, so the connection info nova gets says auth_enabled=false (no libvirt secret)
  crudini --del $C ceph rbd_user 2>/dev/null || true
  # Debian's uwsgi default is 8 processes x 32 threads: far too many for 2 cores (cf. testcloud 05-uwsgi-tune.sh)
  sed -i -E 's/^processes = [0-9]+/processes = 2/; s/^threads = [0-9]+/threads = 1/' /etc/cinder/cinder-api-uwsgi.ini
  install -d -o cinder -g cinder /var/lib/cinder/tmp /var/lib/cinder/conversion /var/log/cinder
}
cinder_db() {
  mysql -e "CREATE DATABASE IF NOT EXISTS cinder"
  su -s /bin/sh -c "cinder-manage db sync" cinder
}
cinder_keystone() {
  "$OS_PY" - <<'EOF'
import openstack
c = openstack.connect(cloud='testcloud-admin')
idc = c.identity
service = idc.find_project('service', domain_id='default')
u = idc.find_user('cinder', domain_id='default') or idc.create_user(
    name='cinder', password='secret', domain_id='default', default_project_id=service.id)
for r in ('admin', 'service'):
    idc.assign_project_role_to_user(service, u, idc.find_role(r))
s = idc.find_service('cinderv3') or idc.create_service(name='cinderv3', type='volumev3',
                                                       description='OpenStack Block Storage')
have = {e.interface for e in idc.endpoints(service_id=s.id)}
for iface in ('public', 'internal', 'admin'):
    if iface not in have:
        idc.create_endpoint(service_id=s.id, interface=iface, region_id='RegionOne',
                            url='http://127.0.0.1:8776/v3/%(project_id)s')
print('cinder keystone ok')
EOF
}
# A pid file from before the machine restarted (or was restored from a snapshot) may name a pid that
# now belongs to another process: the init scripts' start-stop-daemon checks only that the pid lives,
# so "start" would do nothing and "restart" would kill that other process. Drop such a pid file.
# (The CI run of 635a55c failed so: cinder-scheduler and cinder-volume never started, "not up after 180 s".)
drop_stale_pidfile() {
  local f=/run/cinder/$1.pid p
  p=$(cat "$f" 2>/dev/null) || return 0
  if ! tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline" | grep -qF -- "$1"; then
    echo "stale $f (pid $p is not $1): removed"
    rm -f "$f"
  fi
}
cinder_start() {
  local s
  for s in cinder-api cinder-scheduler cinder-volume; do
    drop_stale_pidfile $s
    # the init scripts' "start" is a no-op for a running daemon (start-stop-daemon --oknodo)
    if [ "${CINDER_CONF_CHANGED:-}" ]; then /etc/init.d/$s restart; else /etc/init.d/$s start; fi
  done
  wait_for 120 "cinder-api on :8776" curl -sf http://127.0.0.1:8776/
}
cinder_all() {
  local before after
  before=$(md5sum /etc/cinder/cinder.conf /etc/cinder/cinder-api-uwsgi.ini 2>/dev/null || true)
  cinder_conf
  after=$(md5sum /etc/cinder/cinder.conf /etc/cinder/cinder-api-uwsgi.ini)
  # restart running cinder daemons only when their config changed (not on a plain re-run)
  if [ "$before" != "$after" ]; then CINDER_CONF_CHANGED=1; fi
  cinder_db
  cinder_keystone
  cinder_start
}

# ---------------------------------------------------------------- nova
nova_all() {
  local N=/etc/nova/nova.conf before after
  before=$(md5sum $N)
  s() { crudini --set $N "$@"; }
  s cinder os_region_name RegionOne
  s cinder catalog_info volumev3::publicURL
  s cinder timeout 60
  # admin-context calls (e.g. volume cleanup when a user's token is gone) need nova's own credentials
  s cinder auth_type password
  s cinder auth_url http://127.0.0.1:5000/v3
  s cinder project_domain_name Default
  s cinder user_domain_name Default
  s cinder project_name service
  s cinder username nova
  s cinder password secret
  # An earlier version of this script raised Nova's wait for a volume; a real cloud keeps the default.
  crudini --del $N DEFAULT block_device_allocate_retries 2>/dev/null || true
  crudini --del $N DEFAULT block_device_allocate_retries_interval 2>/dev/null || true
  after=$(md5sum $N)
  if [ "$before" != "$after" ] || [ ! -f "$TESTCLOUD_STATE/cinder-nova-configured" ]; then
    echo "nova.conf changed: restarting nova-api and nova-compute"
    /etc/init.d/nova-api restart
    /etc/init.d/nova-compute restart
    touch "$TESTCLOUD_STATE/cinder-nova-configured"
  else
    echo "nova.conf unchanged: no nova restart"
    /etc/init.d/nova-api start; /etc/init.d/nova-compute start
  fi
  wait_for 120 "nova-api" curl -sf http://127.0.0.1:8774/
}

# ---------------------------------------------------------------- fixtures + checks
fixtures() {
  "$OS_PY" - <<'EOF'
import time, openstack
c = openstack.connect(cloud='testcloud-admin')
bs = c.block_storage
def ok(r):
    if r.status_code >= 400:
        raise SystemExit(f'{r.request.method} {r.url}: {r.status_code} {r.text}')
    return r.json() if r.content else None
# cinder-scheduler and cinder-volume@ceph reporting "up" (cinder-volume checks the RBD pool at start)
deadline = time.time() + 180
while True:
    svcs = ok(bs.get('/os-services'))['services']
    up = {s['binary'] for s in svcs if s['state'] == 'up' and s['status'] == 'enabled'
          and (s['binary'] != 'cinder-volume' or s['host'].endswith('@ceph'))}
    if {'cinder-scheduler', 'cinder-volume'} <= up:
        break
    if time.time() > deadline:
        raise SystemExit(f'cinder services not up after 180 s: {svcs}; see /var/log/cinder/*.log')
    time.sleep(3)
types = {t['name']: t for t in ok(bs.get('/types'))['volume_types']}
if 'ceph' not in types:
    ok(bs.post('/types', json={'volume_type': {'name': 'ceph', 'os-volume-type-access:is_public': True,
                                              'extra_specs': {'volume_backend_name': 'ceph'}}}))
demo = c.identity.find_project('demo', domain_id='default')
q = ok(bs.get(f'/os-quota-sets/{demo.id}'))['quota_set']
if q['volumes'] < 10 or q['gigabytes'] < 200:
    ok(bs.put(f'/os-quota-sets/{demo.id}', json={'quota_set': {'volumes': max(q['volumes'], 10),
                                                               'gigabytes': max(q['gigabytes'], 200)}}))
if not c.compute.find_flavor('m1.volonly', ignore_missing=True):
    c.compute.create_flavor(name='m1.volonly', ram=2048, vcpus=2, disk=0, is_public=True)
stats = ok(bs.get('/scheduler-stats/get_pools?detail=true'))['pools']
print('cinder pools:', [(p['name'], p['capabilities'].get('total_capacity_gb'),
                         p['capabilities'].get('free_capacity_gb')) for p in stats])
print('cinder fixtures ok: volume type ceph (default), demo quota, flavor m1.volonly')
EOF
}

phase install install_pkgs
phase ceph ceph_all
phase cinder cinder_all
phase nova nova_all
phase fixtures fixtures
echo "=== cinder: ready. timings (s):" \
  "install=${T[install]} ceph=${T[ceph]} cinder=${T[cinder]} nova=${T[nova]} fixtures=${T[fixtures]}" \
  "total=$(( T[install] + T[ceph] + T[cinder] + T[nova] + T[fixtures] ))"
