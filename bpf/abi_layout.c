/* Host program run by crates/datapath/build.rs: prints the C layout of every abi.h struct as Rust
 * constants, which crates/datapath/src/abi.rs checks its mirrors against at compile time. */
#include <stddef.h>
#include <stdio.h>
#include "abi.h"

#define SZ(t) printf("pub const SIZE_%s: usize = %zu;\n", #t, sizeof(struct t))
#define OFF(t, f) printf("pub const OFF_%s_%s: usize = %zu;\n", #t, #f, offsetof(struct t, f))

int main(void)
{
	SZ(cw_ipcache_key); OFF(cw_ipcache_key, slot); OFF(cw_ipcache_key, addr);
	SZ(cw_ipcache_val); OFF(cw_ipcache_val, flags);
	SZ(cw_endpoint_key);
	SZ(cw_endpoint_val); OFF(cw_endpoint_val, ifindex); OFF(cw_endpoint_val, flags);
	SZ(cw_policy_key); OFF(cw_policy_key, slot); OFF(cw_policy_key, ep_id); OFF(cw_policy_key, peer);
	OFF(cw_policy_key, dir); OFF(cw_policy_key, proto); OFF(cw_policy_key, port);
	SZ(cw_policy_val); OFF(cw_policy_val, rule); OFF(cw_policy_val, audit_rule);
	SZ(cw_ct_key); OFF(cw_ct_key, sport); OFF(cw_ct_key, ep_id); OFF(cw_ct_key, proto);
	SZ(cw_ct_val); OFF(cw_ct_val, epoch); OFF(cw_ct_val, rule); OFF(cw_ct_val, flags);
	SZ(cw_admit_key); OFF(cw_admit_key, ep_id); OFF(cw_admit_key, dport); OFF(cw_admit_key, dir);
	SZ(cw_admit_val);
	SZ(cw_vcache_entry); SZ(cw_epcache_entry);
	SZ(cw_dns_event); OFF(cw_dns_event, len); OFF(cw_dns_event, data);
	printf("pub const DNS_MAX: usize = %d;\n", CW_DNS_MAX);
	printf("pub const DNS_RELEASE_MARK: u32 = %d;\n", CW_DNS_RELEASE_MARK);
	SZ(cw_event); OFF(cw_event, sport); OFF(cw_event, proto); OFF(cw_event, kind); OFF(cw_event, ep_id); OFF(cw_event, rule);
	printf("pub const POLICY_FIXED_BITS: u32 = %d;\n", CW_POLICY_FIXED_BITS);
	printf("pub const CNT_MAX: u32 = %d;\n", CW_CNT_MAX);
	printf("pub const CFG_SLOT: u32 = %d;\n", CW_CFG_SLOT);
	printf("pub const CFG_EPOCH: u32 = %d;\n", CW_CFG_EPOCH);
	printf("pub const CFG_FLAGS: u32 = %d;\n", CW_CFG_FLAGS);
	printf("pub const F_VISIBILITY_OFF: u32 = %d;\n", CW_F_VISIBILITY_OFF);
	return 0;
}
