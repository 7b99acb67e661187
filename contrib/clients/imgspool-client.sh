#!/bin/sh
# imgspool-client.sh - a POSIX shell imgspool client, written from spool-layout.md: submit a
# job, read its state, wait for its result. Needs only sh, od, mv, ls and cat.
#
#   imgspool-client.sh SPOOL submit FILE|-     prints the task id
#   imgspool-client.sh SPOOL state ID          new | deferred | hold | running on HOST | done | failed
#   imgspool-client.sh SPOOL wait ID [SECONDS] prints the result when the job is finished
#
# Exit codes as imgspool(1): 0 done, 1 failed, 2 usage, 3 not finished, 4 no such job.
set -u

new_id() {
	# maildir's recipe (spool-layout.md section 3): time, pid, host, 64 random bits. The "r":
	# 16 hex digits alone are all decimal once in about 1 800 ids, a reserved ending.
	host=$(hostname 2>/dev/null | tr -c 'A-Za-z0-9-\n' '_' | cut -c1-64)
	rnd=$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
	printf '%s.%06d.%s.%s.r%s\n' "$(date +%s)" "$(awk 'BEGIN{srand(); printf "%d", rand()*1000000}')" \
		"$$" "${host:-host}" "$rnd"
}

# The directory the job file is in; "running on HOST"; nothing when it is nowhere.
state() {
	for dir in new deferred hold failed done; do
		if [ -e "$1/$dir/$2.json" ]; then echo "$dir"; return 0; fi
	done
	# ID in new/ is a client's name; in deferred/, a version moved back (spool-layout.md §5).
	for dir in new deferred; do
		if [ -e "$1/$dir/$2" ]; then echo "$dir"; return 0; fi
	done
	# deferred/ID.N.json (N 2..9): moved back while both names there were taken (§5).
	for n in 2 3 4 5 6 7 8 9; do
		if [ -e "$1/deferred/$2.$n.json" ]; then echo deferred; return 0; fi
	done
	for f in "$1/running/$2"@*.json; do
		[ -e "$f" ] || continue
		host=${f##*/"$2"@}
		echo "running on ${host%.json}"
		return 0
	done
	return 0
}

[ $# -ge 3 ] || { sed -n '6,9p' "$0" >&2; exit 2; }
spool=$1 verb=$2 id=$3
case $verb in
submit)
	[ $# -eq 3 ] || exit 2
	task=$(new_id)
	tmp="$spool/tmp/$task.json"
	# noclobber: never write over another client's file.
	if [ "$id" = - ]; then (set -C; cat > "$tmp") || exit 4; else (set -C; cat -- "$id" > "$tmp") || exit 4; fi
	mv "$tmp" "$spool/new/$task.json" || { rm -f "$tmp"; exit 4; }
	echo "$task"
	;;
state)
	s=$(state "$spool" "$id")
	[ -n "$s" ] || { echo "imgspool-client: no job '$id'" >&2; exit 4; }
	echo "$s"
	case $s in done) exit 0 ;; failed) exit 1 ;; *) exit 3 ;; esac
	;;
wait)
	limit=${4:-0} start=$(date +%s) missing=0
	while :; do
		s=$(state "$spool" "$id")
		case $s in
		done|failed)
			cat "$spool/$s/$id.result.json"
			[ "$s" = done ] && exit 0 || exit 1 ;;
		'')
			missing=$((missing + 1))
			# a job between two renames is nowhere for a moment: give up after 2 s
			[ $missing -lt 10 ] || { echo "imgspool-client: no job '$id'" >&2; exit 4; } ;;
		*) missing=0 ;;
		esac
		if [ "$limit" -gt 0 ] && [ $(($(date +%s) - start)) -ge "$limit" ]; then
			echo "imgspool-client: job '$id' not finished after ${limit}s ($s)" >&2
			exit 3
		fi
		sleep 0.2 2>/dev/null || sleep 1
	done
	;;
*)
	echo "imgspool-client: unknown command '$verb'" >&2
	exit 2
	;;
esac
