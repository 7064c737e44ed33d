// Package failover decides where each hierarchy runs. Decisions are pure
// functions of a Snapshot (node states, priorities, placements, failed
// marks, exclusivity groups), so every rule is a table test and a decision
// can be stored with exactly the inputs that produced it. The leader loop
// that gathers snapshots and carries decisions out lives beside it.
//
// # The safety argument: never two copies
//
// A decision is only as safe as its inputs, so this is where the whole
// argument is written down once: each invariant, the function that
// enforces it, and the test that shows it. Tests named Test* without a
// package are in e2e/ (real backstopd, real agents in network namespaces,
// and a checker that follows every node's addresses through netlink and
// its listening sockets every ~1.3 ms).
//
// 1. One leader per term. Leadership is a PostgreSQL advisory lock held
// on a dedicated connection (store.TryLead); taking it increments the
// term in the same transaction. A killed leader's connection drops and
// the lock with it. Shown by store.TestOneLeaderPerTerm and TestLeaderKilled.
//
// 2. A deposed leader cannot write. Every engine write (judging nodes,
// moving, signing a command) starts with store.checkTermTx, which reads
// the term FOR SHARE in the same transaction: a new leader's takeover
// waits for it, and after the takeover the old term fails with
// cluster.ErrStaleTerm. Shown by store.TestStaleTermWritesNothing.
//
// 3. No judgement during a new leader's first lease. store.JudgeNodes
// ignores every node until one lease plus grace after leader_since, so a
// leader change never looks like a silent cluster. Shown by
// store.TestJudgeNewLeaderGrace and TestLeaderKilled.
//
// 4. Down only when no peer sees the node, on positive evidence.
// store.JudgeNodes declares a node whose lease ran out down only when a
// peer with a fresh lease reported, after the node's last heartbeat, a
// path to it and no such peer sees it; a peer that sees it makes it
// unreachable (nothing moves); with no fresh report at all (an overloaded
// or frozen control plane lets every lease lapse at once) nothing is
// judged. Shown by store.TestJudgeNodeCrash, store.TestJudgeUnreachable,
// store.TestJudgeStarvedControlPlane, store.TestJudgeTwoOfThreeCrash,
// TestUnreachableNothingMoves and TestStarvedControlPlaneMovesNothing.
//
// 5. The node stops serving before the control plane may declare it
// down. The agent's lease runs from the send time of its newest
// acknowledged heartbeat, the server's from receipt plus a grace
// (nodeagent lease.renew); the newest answer wins on both sides, so a
// restart hold ends with the next heartbeat. An isolated agent fences
// itself at its deadline (nodeagent decideFence). The fence guard, a
// real-time-priority process that outlives the agent, holds the same
// deadline (or, while the lease is gone but a majority of the cluster is
// visible, a vouch shorter than the time the peers need to see the node
// silent, counting only peers whose view of the node has had no gap since
// the last acknowledged heartbeat) and fences when it passes, whatever
// became of the agent. A heartbeat that reaches the control plane after
// the node was declared down grants no lease (store.RecordHeartbeat
// answers lease_ttl_ms 0) and the agent fences at once, so a heartbeat
// racing the declaration cannot extend the node's service. Most
// heartbeats take a shorter path (store.RenewLease: the report not
// rewritten, except its telemetry once per period), but only for a node
// that is up, holds no restart hold and awaits no deep check, where it
// grants exactly the lease the full heartbeat would; anything else goes
// through store.RecordHeartbeat. Such renewals are committed in groups
// (one UPDATE for the heartbeats that arrive together); each is answered
// only after its group committed, every condition is checked per node on
// the row it locked, and a node whose row another transaction holds is
// not waited for but sent the full way, which waits for that transaction
// and then sees what it decided. Grouping delays a lease's start by the
// group's wait, which only ends the server's lease later than the agent's
// (counted from its send time), never earlier. The failure detector reads
// its evidence without locks, then locks only the judged nodes whose row
// has not changed since (same state, no heartbeat since) and skips rows
// another transaction holds, which only delays a judgement. Shown by
// store.TestRenewLease, store.TestRenewLeaseGroups,
// store.TestJudgeSkipsLockedNodes, nodeagent.TestLeaseCountsFromSendTime,
// nodeagent.TestLeaseHoldEndsWithTheNextHeartbeat,
// nodeagent.TestGuardFencesWhenTheAgentGoesSilent,
// nodeagent.TestGuardFollowsTheNewestDeadline,
// nodeagent.TestSeenByNeedsAMajorityThatEchoesThisNode,
// store.TestHeartbeatOfADownNodeGrantsNoLease, TestFailoverNetworkLoss,
// TestAgentKilledFencedByGuard, TestAgentStoppedFencedByGuard,
// TestAgentCrashLoopFencedByGuard, TestAgentStopFailsOverAfterTheHold.
// A guard that dies or hangs, or a fencing that fails, stops feeding the
// watchdog when one is configured
// (nodeagent.TestGuardWithholdsTheWatchdogWhenFencingFails).
//
// 6. Epochs and terms are refused when stale. Every placement change
// bumps the hierarchy's epoch in its transaction; every command is signed
// (Ed25519) over its epoch, term, addressee and expiry, and the agent's
// envelope.Verifier refuses a command older than the newest epoch or term
// it has seen, and any replay. Shown by envelope.TestVerify and
// TestAgentRejectsBadCommands.
//
// 7. A reconnecting or restarted agent never restarts what moved. Local
// recovery needs the agent's authority (nodeagent Agent.authority: a valid
// lease and a configuration, fetched by this process, that still places
// the hierarchy here at that epoch), and every operation goes through one
// bracket (nodeagent runner.operate) that rechecks the state, the
// generation bumped by fencing and the context under the lock before every
// kit action. Shown by nodeagent.TestFencedHierarchyIsNeverRestartedByLocalRecovery
// (a synctest reproduction of the fence → stop → start race),
// nodeagent.TestLocalRecoveryRefusedAtAStaleGeneration and
// TestFailoverNodeCrash (the rebooted node relinquishes).
//
// 8. No move off a down node before its fence is confirmed, when it has a
// fence device. A down node with a device awaits its fence
// (store.awaitingFenceSQL, one definition used by the cluster status the
// decision reads, by the fencer's job list and by store.StartMove, which
// refuses a move off such a node); the leader's fencer runs the unmodified
// fence agent (action=off, then status must answer "off"), records the
// fence under the term check, and only then does the failover proceed; a
// failed fence moves nothing, raises fence.failed and is retried. Shown by
// store.TestAwaitingFenceGate, failover.TestFencerRetriesAndParallelism,
// TestFenceRedfishNodeCrash and TestFenceDeviceNotAnswering.
//
// 9. A restart or upgrade neither interrupts nor duplicates. The
// stopping agent asks for a restart hold; the control plane keeps the
// lease, the guard the same deadline, and the next process adopts the
// running hierarchies; if none comes, 5 applies when the hold ends. Shown
// by store.TestRestartHold, store.TestRestartHoldSurvivesAStrayHeartbeat
// (a late heartbeat of the stopping process never cuts its own hold),
// TestAgentRestartKeepsServices and
// TestAgentUpgradeKeepsServices.
//
// 10. A hierarchy a node gave up by fencing itself is placed again,
// never twice. When a node's lease lapses while it brings a hierarchy in
// service (or it refuses because it is isolated), the agent fences what it
// started and reports the reason fenced or isolated; when it fenced a
// hierarchy in service, its fence report says so. A clean fence is not the
// hierarchy's failure on the node: the store leaves the hierarchy failed
// with no node and no failed mark (store.RecordCommandResult,
// store.RecordHeartbeat), and the engine places it again when a node can
// take it, that node included. A fence that failed is reported as a failed
// hierarchy and keeps its mark. Nothing runs twice: the node runs nothing
// of it, any node it left was down before a command was issued, and every
// further placement goes through 1–8 again. Shown by
// store.TestFencedBringUpLeavesNoFailedMark, store.TestLateFenceReport
// and TestFailoverCascade.
//
// 11. Reading less never decides on stale state. A pass reads only the
// clusters that changed (an event heard in them, a node judged in them,
// something under way in them), and every cluster at the first pass of a
// term, after an operator's change, after an error and at least once a
// second; it judges leases only when one ran out (store.LeaseOutlook,
// read at the start of the pass). A cluster not read in a pass is not
// decided on in it; a cluster that is read is read whole, in one
// transaction, as before, and every move it leads to is still checked
// against the hierarchy's epoch under its row lock (1, 6). A move's
// second step (the bring-up on the target once the old node confirmed
// its stop) is issued by the stop's result in the same transaction, or
// by AdvanceMoves if that had no signer: the move is cleared as it
// advances, so it advances once. Shown by
// failover.TestEngineReadsWhatChanged, store.TestLeaseOutlook and
// store.TestStopResultAdvancesTheMove.
package failover
