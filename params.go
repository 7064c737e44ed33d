package backstop

// Parameter structs of service methods that would otherwise take a long
// run of positional strings, easy to pass in the wrong order (River's
// driver interface does the same with its *Params structs).

// PlaceRequest asks for a hierarchy to be brought in service on a node
// (Kind OperationInService) or taken out of service on the node it is
// placed on (Kind OperationOutOfService; NodeID is ignored).
type PlaceRequest struct {
	ClusterID   string
	HierarchyID string
	Kind        string
	NodeID      string
}

// EventFilter selects events of a cluster's log: those after seq After,
// of type Type ("" for any) and at least MinSeverity ("" for any), at
// most Limit of them, oldest first.
type EventFilter struct {
	ClusterID   string
	After       int64
	Type        string
	MinSeverity string
	Limit       int
}

// IdempotencyClaim claims an Idempotency-Key for a request. The key is
// scoped to the API token TokenID; Method, Path and BodyHash (SHA-256 of
// the body) say which request it was first used for.
type IdempotencyClaim struct {
	TokenID  string
	Key      string
	Method   string
	Path     string
	BodyHash []byte
}
