package simgpu

// Go mirror of test/simgpu/state.h. Every offset is spelled out here and checked
// against the C compiler's view by TestLayoutMatchesC (which runs
// build/test/sim_layout), so the two can never drift silently.

const (
	// Magic is "VGPUSIM1" read as a little-endian uint64.
	Magic   uint64 = 0x314d495355504756
	Version uint32 = 2

	MaxDevices = 16
	MaxProcs   = 256
	// NBuckets is the length of the utilization rings (one bucket per sample period;
	// the period is the node's, hdr.bucket_ns: see state.h).
	NBuckets = 128
	// HistorySamples is how many complete sample periods NVML reports from.
	HistorySamples = 72
	futureBuckets  = 54
	// BacklogPeriods bounds --max-backlog in sample periods, and MaxBacklogLimit in
	// time: launches are credited to periods at most futureBuckets ahead, so the
	// ring never overwrites a period NVML still reads.
	BacklogPeriods         = 52
	MaxBacklogLimit uint64 = 5_000_000_000
	// MinSamplePeriod and MaxSamplePeriod bound --nvml-sample-period.
	MinSamplePeriod uint64 = 10_000_000
	MaxSamplePeriod uint64 = 1_000_000_000

	nameLen  = 96
	uuidLen  = 80
	busIDLen = 32
	nodesLen = 256

	bucketEpochShift        = 40
	bucketEpochMask  uint64 = 0xffffff
	bucketBusyMask   uint64 = 1<<bucketEpochShift - 1

	phaseFree       = 0
	phaseClaiming   = 1
	phaseLive       = 2
	phaseReclaiming = 3
)

// struct sim_devcfg
const (
	cfgName        = 0
	cfgUUID        = cfgName + nameLen
	cfgPCIBusID    = cfgUUID + uuidLen
	cfgTotalMem    = cfgPCIBusID + busIDLen
	cfgSMs         = cfgTotalMem + 8
	cfgMinor       = cfgSMs + 4
	cfgPCIDomain   = cfgMinor + 4
	cfgPCIBus      = cfgPCIDomain + 4
	cfgPCIDevice   = cfgPCIBus + 4
	cfgPCIDeviceID = cfgPCIDevice + 4
	cfgPCISubsysID = cfgPCIDeviceID + 4
	cfgCCMajor     = cfgPCISubsysID + 4
	cfgCCMinor     = cfgCCMajor + 4
	cfgPad0        = cfgCCMinor + 4
	devcfgSize     = cfgPad0 + 4
)

// struct sim_hdr
const (
	hdrMagic         = 0
	hdrVersion       = 8
	hdrHdrSize       = 12
	hdrFileSize      = 16
	hdrDeviceCount   = 24
	hdrMaxProcs      = 28
	hdrMaxDevices    = 32
	hdrNBuckets      = 36
	hdrBucketNs      = 40
	hdrNsPerBlock    = 48
	hdrContextMemory = 56
	hdrMaxBacklogNs  = 64
	hdrCreatedUnixNs = 72
	hdrDeviceNodes   = 80
	hdrReserved      = hdrDeviceNodes + nodesLen
	hdrDev           = hdrReserved + 16*8
	hdrSize          = hdrDev + MaxDevices*devcfgSize
)

// struct sim_devstate
const (
	dsUsed       = 0
	dsBusyUntil  = 8
	dsBusyTotal  = 16
	dsLaunches   = 24
	dsVACursor   = 32
	dsUsedHigh   = 40
	dsBuckets    = 64
	devstateSize = dsBuckets + NBuckets*8
)

// struct sim_procdev
const (
	pdUsed      = 0
	pdBusyNs    = 8
	pdLaunches  = 16
	pdContexts  = 24
	pdBuckets   = 32
	procdevSize = pdBuckets + NBuckets*8
)

// struct sim_proc
const (
	prState        = 0
	prStartTime    = 8
	prPidNS        = 16
	prRegisteredNs = 24
	prComm         = 32
	prDev          = 64
	procSize       = prDev + MaxDevices*procdevSize
)

// struct sim_state
const (
	stHdr     = 0
	stDev     = stHdr + hdrSize
	stProc    = stDev + MaxDevices*devstateSize
	StateSize = stProc + MaxProcs*procSize
)

func devcfgOff(d int) int     { return stHdr + hdrDev + d*devcfgSize }
func devstateOff(d int) int   { return stDev + d*devstateSize }
func procOff(i int) int       { return stProc + i*procSize }
func procdevOff(i, d int) int { return procOff(i) + prDev + d*procdevSize }

func slotPhase(w uint64) uint32 { return uint32(w & 0xff) }
func slotPID(w uint64) int      { return int((w >> 8) & 0xffffffff) }
func slotGen(w uint64) uint64   { return w >> 40 }
func slotWord(gen uint64, pid int, phase uint32) uint64 {
	return (gen&0xffffff)<<40 | uint64(uint32(pid))<<8 | uint64(phase)
}

// layoutTable lists every field with its offset and size, in the format sim_layout
// prints, for the cross-check test.
func layoutTable() map[string][2]int {
	return map[string][2]int{
		"sim_state":                 {0, StateSize},
		"sim_hdr":                   {0, hdrSize},
		"sim_hdr.magic":             {hdrMagic, 8},
		"sim_hdr.version":           {hdrVersion, 4},
		"sim_hdr.hdr_size":          {hdrHdrSize, 4},
		"sim_hdr.file_size":         {hdrFileSize, 8},
		"sim_hdr.device_count":      {hdrDeviceCount, 4},
		"sim_hdr.max_procs":         {hdrMaxProcs, 4},
		"sim_hdr.max_devices":       {hdrMaxDevices, 4},
		"sim_hdr.nbuckets":          {hdrNBuckets, 4},
		"sim_hdr.bucket_ns":         {hdrBucketNs, 8},
		"sim_hdr.ns_per_block":      {hdrNsPerBlock, 8},
		"sim_hdr.context_memory":    {hdrContextMemory, 8},
		"sim_hdr.max_backlog_ns":    {hdrMaxBacklogNs, 8},
		"sim_hdr.created_unix_ns":   {hdrCreatedUnixNs, 8},
		"sim_hdr.device_nodes":      {hdrDeviceNodes, nodesLen},
		"sim_hdr.reserved":          {hdrReserved, 16 * 8},
		"sim_hdr.dev":               {hdrDev, MaxDevices * devcfgSize},
		"sim_devcfg":                {0, devcfgSize},
		"sim_devcfg.name":           {cfgName, nameLen},
		"sim_devcfg.uuid":           {cfgUUID, uuidLen},
		"sim_devcfg.pci_bus_id":     {cfgPCIBusID, busIDLen},
		"sim_devcfg.total_mem":      {cfgTotalMem, 8},
		"sim_devcfg.sms":            {cfgSMs, 4},
		"sim_devcfg.minor":          {cfgMinor, 4},
		"sim_devcfg.pci_domain":     {cfgPCIDomain, 4},
		"sim_devcfg.pci_bus":        {cfgPCIBus, 4},
		"sim_devcfg.pci_device":     {cfgPCIDevice, 4},
		"sim_devcfg.pci_device_id":  {cfgPCIDeviceID, 4},
		"sim_devcfg.pci_subsys_id":  {cfgPCISubsysID, 4},
		"sim_devcfg.cc_major":       {cfgCCMajor, 4},
		"sim_devcfg.cc_minor":       {cfgCCMinor, 4},
		"sim_devstate":              {0, devstateSize},
		"sim_devstate.used":         {dsUsed, 8},
		"sim_devstate.busy_until":   {dsBusyUntil, 8},
		"sim_devstate.busy_total":   {dsBusyTotal, 8},
		"sim_devstate.launches":     {dsLaunches, 8},
		"sim_devstate.va_cursor":    {dsVACursor, 8},
		"sim_devstate.used_high":    {dsUsedHigh, 8},
		"sim_devstate.buckets":      {dsBuckets, NBuckets * 8},
		"sim_procdev":               {0, procdevSize},
		"sim_procdev.used":          {pdUsed, 8},
		"sim_procdev.busy_ns":       {pdBusyNs, 8},
		"sim_procdev.launches":      {pdLaunches, 8},
		"sim_procdev.contexts":      {pdContexts, 8},
		"sim_procdev.buckets":       {pdBuckets, NBuckets * 8},
		"sim_proc":                  {0, procSize},
		"sim_proc.state":            {prState, 8},
		"sim_proc.start_time":       {prStartTime, 8},
		"sim_proc.pidns":            {prPidNS, 8},
		"sim_proc.registered_ns":    {prRegisteredNs, 8},
		"sim_proc.comm":             {prComm, 16},
		"sim_proc.dev":              {prDev, MaxDevices * procdevSize},
		"sim_state.dev":             {stDev, MaxDevices * devstateSize},
		"sim_state.proc":            {stProc, MaxProcs * procSize},
		"const.SIM_MAGIC_lo":        {int(Magic & 0xffffffff), 0},
		"const.SIM_MAGIC_hi":        {int(Magic >> 32), 0},
		"const.SIM_VERSION":         {int(Version), 0},
		"const.SIM_MAX_DEVICES":     {MaxDevices, 0},
		"const.SIM_MAX_PROCS":       {MaxProcs, 0},
		"const.SIM_NBUCKETS":        {NBuckets, 0},
		"const.SIM_HISTORY_SAMPLES": {HistorySamples, 0},
		"const.SIM_FUTURE_BUCKETS":  {futureBuckets, 0},
		"const.SIM_BACKLOG_PERIODS": {BacklogPeriods, 0},
		"const.SIM_MIN_SAMPLE_NS":   {int(MinSamplePeriod), 0},
		"const.SIM_MAX_SAMPLE_NS":   {int(MaxSamplePeriod), 0},
		"const.SIM_MAX_BACKLOG_NS":  {int(MaxBacklogLimit), 0},
		"const.SIM_BUCKET_EPOCH_SH": {bucketEpochShift, 0},
	}
}
