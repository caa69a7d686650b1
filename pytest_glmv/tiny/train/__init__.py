"""Train the tiny GLM-4V on synthetic tasks that mirror every `behavior` check (issue 25).

    python -m pytest_glmv.tiny.train --arch moe --out DIR --seed 0 --steps N --batch B --workers W \
        --device cuda --time-budget S

tasks.py / dialogs.py: the tasks (pure Python + Pillow); data.py: rendering through the model's own
chat template and processor, batches in DataLoader workers; train.py: the loop, the gate and the save;
evaluate.py: greedy accuracy per task under transformers or through a server's chat API.
"""
