"""Request types of the Rust Aspen catalog that are not core: each belongs to
an app (a plugin, a jobs layer, federation …). With no local handler such a
request is answered ``CAPABILITY_UNAVAILABLE`` naming the app, while a name
nobody has heard of is ``UNKNOWN_REQUEST``."""

from __future__ import annotations

_BY_APP = {
    "cluster": """GetRaftMetrics GetLeader GetClusterState GetMetrics GetTopology InitCluster
        AddLearner ChangeMembership PromoteLearner AddPeer TriggerSnapshot CheckpointWal
        GetClusterTicket GetClusterTicketCombined GetClientTicket GetDocsTicket""",
    "kv": "ListVaults GetVaultKeys WatchStatus",
    "sql": "ExecuteSql",
    # coordination (Lock*, Counter*, Queue*, RWLock* …): served by the core, aspen.coordination
    "service-registry": """ServiceRegister ServiceDeregister ServiceDiscover ServiceList
        ServiceGetInstance ServiceHeartbeat ServiceUpdateHealth ServiceUpdateMetadata""",
    "blobs": """GetBlobTicket GetBlobStatus DownloadBlob DownloadBlobByHash DownloadBlobByProvider
        BlobReplicatePull GetBlobReplicationStatus TriggerBlobReplication RunBlobRepairCycle""",
    "docs": """DocsSet DocsGet DocsDelete DocsList DocsStatus AddPeerCluster RemovePeerCluster
        ListPeerClusters GetPeerClusterStatus UpdatePeerClusterFilter UpdatePeerClusterPriority
        SetPeerClusterEnabled GetKeyOrigin""",
    "dns": """DnsSetRecord DnsGetRecord DnsGetRecords DnsDeleteRecord DnsResolve DnsScanRecords
        DnsSetZone DnsGetZone DnsListZones DnsDeleteZone""",
    "forge": """ForgeCreateRepo ForgeGetRepo ForgeListRepos ForgeStoreBlob ForgeGetBlob
        ForgeCreateTree ForgeGetTree ForgeCommit ForgeGetCommit ForgeLog ForgeGetRef ForgeSetRef
        ForgeDeleteRef ForgeCasRef ForgeListBranches ForgeListTags ForgeCreateIssue
        ForgeListIssues ForgeGetIssue ForgeCommentIssue ForgeCloseIssue ForgeReopenIssue
        ForgeCreatePatch ForgeListPatches ForgeGetPatch ForgeUpdatePatch ForgeApprovePatch
        ForgeMergePatch ForgeClosePatch ForgeGetDelegateKey GitBridgeListRefs GitBridgeFetch
        GitBridgePush GitBridgePushStart GitBridgePushChunk GitBridgePushComplete""",
    "federation": """GetFederationStatus ListDiscoveredClusters GetDiscoveredCluster TrustCluster
        UntrustCluster FederateRepository ListFederatedRepositories ForgeFetchFederated""",
    "jobs": """JobSubmit JobGet JobList JobCancel JobUpdateProgress JobQueueStats WorkerStatus
        WorkerRegister WorkerHeartbeat WorkerDeregister WorkerPollJobs WorkerCompleteJob""",
    "hooks": "HookList HookGetMetrics HookTrigger",
    "ci": """CiTriggerPipeline CiGetStatus CiListRuns CiCancelRun CiWatchRepo CiUnwatchRepo
        CiListArtifacts CiGetArtifact CiGetJobLogs CiSubscribeLogs CiGetJobOutput""",
    "secrets": """SecretsKvRead SecretsKvWrite SecretsKvDelete SecretsKvDestroy SecretsKvUndelete
        SecretsKvList SecretsKvMetadata SecretsKvUpdateMetadata SecretsKvDeleteMetadata
        SecretsTransitCreateKey SecretsTransitEncrypt SecretsTransitDecrypt SecretsTransitSign
        SecretsTransitVerify SecretsTransitRotateKey SecretsTransitListKeys SecretsTransitRewrap
        SecretsTransitDatakey SecretsPkiGenerateRoot SecretsPkiGenerateIntermediate
        SecretsPkiSetSignedIntermediate SecretsPkiCreateRole SecretsPkiIssue SecretsPkiRevoke
        SecretsPkiGetCrl SecretsPkiListCerts SecretsPkiGetRole SecretsPkiListRoles
        SecretsNixCacheCreateKey SecretsNixCacheGetPublicKey SecretsNixCacheRotateKey
        SecretsNixCacheDeleteKey SecretsNixCacheListKeys""",
    "cache": """CacheQuery CacheStats CacheDownload CacheMigrationStart CacheMigrationStatus
        CacheMigrationCancel CacheMigrationValidate SnixDirectoryGet SnixDirectoryPut
        SnixPathInfoGet SnixPathInfoPut""",
    "pijul": """PijulRepoInit PijulRepoList PijulRepoInfo PijulChannelList PijulChannelCreate
        PijulChannelDelete PijulChannelFork PijulChannelInfo PijulRecord PijulApply
        PijulUnrecord PijulLog PijulCheckout PijulShow PijulBlame""",
    "automerge": """AutomergeCreate AutomergeGet AutomergeSave AutomergeDelete
        AutomergeApplyChanges AutomergeMerge AutomergeList AutomergeGetMetadata AutomergeExists
        AutomergeGenerateSyncMessage AutomergeReceiveSyncMessage""",
}

# request type -> the app that provides it
APP_REQUESTS: dict[str, str] = {t: app for app, names in _BY_APP.items() for t in names.split()}
